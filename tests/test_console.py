"""The operators' console (issue 20) over real HTTP on 127.0.0.1: logins, roles, CSRF, the
rate limit, control through the same code path as ippctl clients, the audit. The browser
tests are in test_console_browser.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

from shared.db.database import Database
from shared.db.queries import Query
from tests.console_fixture import AUDIT, CLIENT, PASSWORD, USERS, Console, ippctl
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port


async def _login(http: aiohttp.ClientSession, console: Console, user: str, password: str = PASSWORD) -> int:
    async with http.post(
        f"{console.url}/login", data={"user": user, "password": password}, allow_redirects=False
    ) as r:
        return r.status


async def _csrf(http: aiohttp.ClientSession, console: Console) -> str:
    async with http.get(f"{console.url}/") as r:
        page = await r.text()
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match, page[:500]
    return match.group(1)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_every_page_needs_a_login_and_the_cookie_is_signed_httponly_and_samesite(console):
    async with _session() as http:
        for path in ("/", "/partials/clients", "/partials/pipelines", "/audit"):
            async with http.get(f"{console.url}{path}", allow_redirects=False) as r:
                assert (r.status, r.headers["Location"]) == (303, "/login"), path
        async with http.post(f"{console.url}/clients/x/pause", data={}, allow_redirects=False) as r:
            assert r.status == 303
        async with http.post(
            f"{console.url}/login", data={"user": "alice", "password": PASSWORD}, allow_redirects=False
        ) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        token = re.search(r"ipp_console=([^;]+)", cookie)
        assert token and re.fullmatch(r"[A-Za-z0-9_-]+\.[0-9a-f]{64}", token.group(1))
        async with http.get(f"{console.url}/") as r:
            page = await r.text()
            assert r.status == 200 and "alice (operator)" in page and "Clients" in page
            assert (
                r.headers["X-Frame-Options"] == "DENY"
                and "default-src 'self'" in r.headers["Content-Security-Policy"]
            )
    # the same token with another signature is no session
    forged = token.group(1).split(".")[0] + "." + "0" * 64
    async with (
        aiohttp.ClientSession(cookies={"ipp_console": forged}) as http,
        http.get(f"{console.url}/", allow_redirects=False) as r,
    ):
        assert r.status == 303


async def test_a_wrong_password_is_refused_audited_and_logins_are_rate_limited(console, db):
    async with _session() as http:
        assert await _login(http, console, "alice", "wrong") == 401
        assert await _login(http, console, "nobody", "wrong") == 401
        for _ in range(4):
            assert await _login(http, console, "alice", "wrong") == 401
        assert await _login(http, console, "alice") == 429  # even the right one, for a minute
        assert await _login(http, console, "vic") == 303  # another user from here is not locked out
    rows = await db.fetch_all(AUDIT)
    assert [(r["action"], r["ok"]) for r in rows] == [("login", 0)] * 7 + [("login", 1)]
    assert rows[0]["result"] == "wrong user name or password" and rows[0]["remote"] == "127.0.0.1"
    assert "too many logins for this user from here" in rows[-2]["result"]
    for user in await db.fetch_all(USERS):
        assert (
            user["password_hash"].startswith("scrypt$131072$8$1$") and PASSWORD not in user["password_hash"]
        )


async def test_a_viewer_sees_everything_and_changes_nothing(console, db, spawn):
    worker = spawn("workload", heartbeat_interval_s=1)
    await eventually(worker.client_id, timeout_s=60, what="the workload agent registered")
    async with _session() as http:
        assert await _login(http, console, "vic") == 303
        async with http.get(f"{console.url}/") as r:
            page = await r.text()
        assert worker.client_id() in page and "workload" in page and ">pause</button>" not in page
        csrf = await _csrf(http, console)
        async with http.post(f"{console.url}/clients/{worker.client_id()}/pause", data={"csrf": csrf}) as r:
            assert r.status == 403 and "a viewer may not client_pause" in await r.text()
        async with http.post(
            f"{console.url}/flags", data={"csrf": csrf, "agent": "workload", "command": "stop"}
        ) as r:
            assert r.status == 403
    assert (await db.fetch_one(CLIENT, id=worker.client_id()))["command"] is None
    refused = [r for r in await db.fetch_all(AUDIT) if r["action"] != "login"]
    assert [(r["user"], r["action"], r["ok"]) for r in refused] == [
        ("vic", "client_pause", 0),
        ("vic", "flag_stop", 0),
    ]


async def test_an_operator_pauses_and_resumes_a_client_as_ippctl_does_and_each_write_is_audited(
    console, db, spawn
):
    worker = spawn("workload", heartbeat_interval_s=1)
    await eventually(worker.client_id, timeout_s=60, what="the workload agent registered")
    cid = worker.client_id()
    async with _session() as http:
        assert await _login(http, console, "alice") == 303
        async with http.post(f"{console.url}/clients/{cid}/pause", data={}) as r:
            assert r.status == 403 and "CSRF" in await r.text()
        assert (await db.fetch_one(CLIENT, id=cid))["command"] is None
        csrf = await _csrf(http, console)
        async with http.post(f"{console.url}/clients/{cid}/pause", data={"csrf": csrf}) as r:
            assert r.status == 200 and f"pause: client {cid}" in await r.text()
        await eventually(lambda: _status(db, cid, "paused"), timeout_s=30, what="the client paused")
        async with http.get(f"{console.url}/partials/clients") as r:
            assert re.search(rf'data-client="{cid}">.*?class="status">paused', await r.text(), re.S)
        async with http.post(f"{console.url}/clients/{cid}/resume", data={"csrf": csrf}) as r:
            assert r.status == 200
        await eventually(lambda: _status(db, cid, "running"), timeout_s=30, what="the client running again")
        # ippctl's own error text, shown on the page
        async with http.post(f"{console.url}/clients/no-such-id/stop", data={"csrf": csrf}) as r:
            assert r.status == 400 and "no client with id no-such-id" in await r.text()
        # a standing flag per agent, then cleared
        data = {"csrf": csrf, "agent": "workload", "host": "", "config": "", "command": "pause"}
        async with http.post(f"{console.url}/flags", data=data) as r:
            assert "pause: standing flag set for agent=workload host=* config=*" in await r.text()
        flags = await db.fetch_all(Query("t_f", "SELECT agent, command, set_by FROM agent_control", "test"))
        assert [(f["agent"], f["command"], f["set_by"]) for f in flags] == [
            ("workload", "pause", "alice@console")
        ]
        await eventually(lambda: _status(db, cid, "paused"), timeout_s=30, what="the flag obeyed")
        async with http.post(f"{console.url}/flags", data={**data, "command": "resume"}) as r:
            assert "resume: cleared 1 standing flag(s)" in await r.text()
        async with http.get(f"{console.url}/audit") as r:
            assert "client_pause" in await r.text()
        async with http.post(f"{console.url}/logout", data={"csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{console.url}/", allow_redirects=False) as r:
            assert r.status == 303  # the session is gone
    writes = [(r["user"], r["action"], r["ok"]) for r in await db.fetch_all(AUDIT) if r["action"] != "login"]
    assert writes == [
        ("alice", "client_pause", 0),
        ("alice", "client_pause", 1),
        ("alice", "client_resume", 1),
        ("alice", "client_stop", 0),
        ("alice", "flag_pause", 1),
        ("alice", "flag_resume", 1),
        ("alice", "logout", 1),
    ]
    assert console.proc.events("console_action")


async def _status(db: Database, client_id: str | None, status: str) -> bool:
    row = await db.fetch_one(CLIENT, id=client_id)
    return row is not None and row["status"] == status


def test_ippctl_console_user_add_refuses_bad_names_roles_passwords_and_repeats(db, test_dsn):
    assert (
        "at least 8"
        in ippctl(
            test_dsn, "console", "user", "add", "bob", "--role", "viewer", "--password-stdin", stdin="short"
        ).stderr
    )
    assert (
        ippctl(
            test_dsn, "console", "user", "add", "bob", "--role", "king", "--password-stdin", stdin=PASSWORD
        ).returncode
        == 2
    )
    assert (
        "not valid"
        in ippctl(
            test_dsn, "console", "user", "add", "../b", "--role", "viewer", "--password-stdin", stdin=PASSWORD
        ).stderr
    )
    assert "no terminal" in ippctl(test_dsn, "console", "user", "add", "bob", "--role", "viewer").stderr
    assert (
        ippctl(
            test_dsn, "console", "user", "add", "bob", "--role", "viewer", "--password-stdin", stdin=PASSWORD
        ).returncode
        == 0
    )
    again = ippctl(
        test_dsn, "console", "user", "add", "bob", "--role", "admin", "--password-stdin", stdin=PASSWORD
    )
    assert again.returncode != 0 and "exists already" in again.stderr
    listed = ippctl(test_dsn, "console", "user", "list")
    assert re.search(r"^bob\s+viewer", listed.stdout, re.M)


async def test_loading_configs_are_made_and_edited_with_ippctl_s_fields_and_checks_and_ippctl_reads_them(
    console, db, test_dsn
):
    async with _session() as http:
        assert await _login(http, console, "alice") == 303
        async with http.get(f"{console.url}/loading/new", params={"name": "cons1"}) as r:
            form = await r.text()
        assert r.status == 200 and "Creating loading config cons1" in form
        for field, sqltype in (
            ("datastore_type", "varchar(30)"),
            ("datastore_publish", "tinyint(1)"),
            ("min_ra", "double"),
        ):
            assert re.search(rf'f-{field}">{field}</label></td><td>{re.escape(sqltype)}</td>', form), field
        values = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))
        csrf = values.pop("csrf")
        assert values["datastore_type"] == "IPP_PSPS" and values["datastore_publish"] == "no"
        bad = {**values, "csrf": csrf, "min_ra": "400"}
        async with http.post(f"{console.url}/loading/cons1", data=bad) as r:
            assert r.status == 400 and "min_ra = &#39;400&#39;: expected 0..360 degrees" in await r.text()
        assert await configs_named(test_dsn, "cons1") == []  # nothing saved
        good = {**values, "csrf": csrf, "min_ra": "9", "max_ra": "11", "batch_types": "P2"}
        async with http.post(f"{console.url}/loading/cons1", data=good) as r:
            assert r.status == 200 and "config cons1 saved" in await r.text()
        (listed,) = await configs_named(test_dsn, "cons1")
        assert (listed["min_ra"], listed["max_ra"], listed["batch_types"], listed["active"]) == (
            9.0,
            11.0,
            "P2",
            True,
        )
        async with http.post(f"{console.url}/loading/cons1/active", data={"csrf": csrf, "active": "0"}) as r:
            assert "config cons1 deactivated" in await r.text()
        assert (await configs_named(test_dsn, "cons1"))[0]["active"] is False
        async with http.post(f"{console.url}/loading/cons1/queue", data={"csrf": csrf}) as r:
            assert "cons1: queued" in await r.text()
        async with http.post(f"{console.url}/loading/cons1/init", data={"csrf": csrf}) as r:
            assert "cons1: IN batch B" in await r.text()
        async with http.post(f"{console.url}/loading/cons1/init", data={"csrf": csrf}) as r:
            assert "is published already" in await r.text()
        async with http.post(f"{console.url}/loading/cons1/requeue", data={"csrf": csrf}) as r:
            assert "cons1: 0 failed items queued again" in await r.text()
        async with http.post(f"{console.url}/loading/nosuch/queue", data={"csrf": csrf}) as r:
            assert r.status == 400 and "no loading config &#39;nosuch&#39;" in await r.text()
        async with http.get(
            f"{console.url}/batches/cons1",
            params={"type": "IN", "stage": "processed", "outcome": "succeeded"},
        ) as r:
            page = await r.text()
        batch = re.search(r"<td>(B\d{8})</td><td>IN</td>", page)
        assert batch, page[-2000:]
        async with http.post(
            f"{console.url}/batches/cons1/purge", data={"csrf": csrf, "first": batch.group(1)}
        ) as r:
            assert "cons1: 1 batches marked purged" in await r.text()
        async with http.post(f"{console.url}/batches/cons1/remove", data={"csrf": csrf, "first": "B2"}) as r:
            assert r.status == 400 and "is not valid" in await r.text()
    async with _session() as http:  # a viewer reads the same pages and changes nothing
        assert await _login(http, console, "vic") == 303
        async with http.get(f"{console.url}/loading/cons1") as r:
            page = await r.text()
        assert "readonly" in page and 'id="save"' not in page
        csrf = await _csrf(http, console)
        async with http.post(f"{console.url}/loading/cons1", data={"csrf": csrf, "min_ra": "1"}) as r:
            assert r.status == 403
    assert (await configs_named(test_dsn, "cons1"))[0]["min_ra"] == 9.0


async def configs_named(test_dsn: str, name: str) -> list[dict[str, Any]]:
    import json

    out = ippctl(test_dsn, "psps", "config", "list", "--json")
    return [c for c in json.loads(out.stdout) if c["name"] == name]


async def test_runs_and_storage_actions_take_ippctl_s_rules_and_texts_and_update_shows_its_cascade_first(
    console, db, test_dsn, tmp_path
):
    await db.execute(Query("t_run", "DELETE FROM chipRun WHERE chip_id = 990001", "test"))
    await db.execute(
        Query("t_run", "INSERT INTO chipRun (chip_id, exp_id, state) VALUES (990001, 1, 'cleaned')", "test")
    )
    # a queued run never destreaked (magicked 0) waits, counted on the page (seed 001)
    await db.execute(
        Query(
            "t_dist",
            "INSERT INTO distRun (stage, stage_id, clean, product, state) "
            "VALUES ('chip', 990001, 0, 'consp', 'new')",
            "test",
        )
    )
    added = ippctl(test_dsn, "storage", "volume", "add", "cons.v", str(tmp_path / "vol"))
    assert added.returncode == 0, added.stderr
    state = Query("t_st", "SELECT state FROM chipRun WHERE chip_id = 990001", "test")
    try:
        async with _session() as http:
            assert await _login(http, console, "alice") == 303
            async with http.get(f"{console.url}/runs") as r:
                page = await r.text()
            assert r.status == 200 and "cons.v" in page and "Failed filesets" in page
            assert re.search(r'id="destreak-table">.*?<td>chip</td><td>consp</td><td>1</td>', page, re.S)
            csrf = await _csrf(http, console)
            # ippctl's transition rules and texts
            bad = {"csrf": csrf, "stage": "chip", "id": "990001", "state": "full"}
            async with http.post(f"{console.url}/runs/set-state", data=bad) as r:
                text = await r.text()
            assert r.status == 400 and "&#39;full&#39; cannot be set by an operator" in text
            async with http.post(f"{console.url}/runs/set-state", data={**bad, "id": "x"}) as r:
                assert r.status == 400 and "is not a number" in await r.text()
            # request-update: first what it would change, nothing changed yet; then confirmed
            run = {"csrf": csrf, "stage": "chip", "id": "990001"}
            async with http.post(f"{console.url}/runs/update-preview", data=run) as r:
                text = await r.text()
            assert "would set chip 990001: cleaned -&gt; update" in text and 'id="confirm-update"' in text
            assert await db.fetch_val(state) == "cleaned"
            async with http.post(f"{console.url}/runs/update", data=run) as r:
                assert "chip 990001: cleaned -&gt; update requested" in await r.text()
            assert await db.fetch_val(state) == "update"
            volume = {"csrf": csrf, "name": "cons.v", "state": "down"}
            async with http.post(f"{console.url}/storage/volume", data=volume) as r:
                assert r.status == 403  # a volume's state is an admin's
            async with _session() as admin:
                assert await _login(admin, console, "ada") == 303
                volume["csrf"] = await _csrf(admin, console)
                async with admin.post(f"{console.url}/storage/volume", data=volume) as r:
                    assert "volume cons.v is now down" in await r.text()
                async with admin.post(f"{console.url}/storage/volume", data={**volume, "state": "gone"}) as r:
                    assert r.status == 400 and "volume state must be one of up, down, lost" in await r.text()
            async with http.post(f"{console.url}/storage/audit", data={"csrf": csrf}) as r:
                assert "files on volumes that are up" in await r.text()
            async with http.post(
                f"{console.url}/dist/retry", data={"csrf": csrf, "name": "x.chip.1.1.1"}
            ) as r:
                assert r.status == 400 and "no failed fileset &#39;x.chip.1.1.1&#39;" in await r.text()
        writes = [(r["action"], r["ok"]) for r in await db.fetch_all(AUDIT) if r["action"] != "login"]
        assert writes == [  # every write (not the preview, which changes nothing) audited
            ("runs_set_state", 0), ("runs_set_state", 0), ("runs_request_update", 1), ("volume_state", 0),
            ("volume_state", 1), ("volume_state", 0), ("storage_audit", 1), ("dist_retry", 0),
        ]  # fmt: skip
    finally:
        await db.execute(Query("t_run", "DELETE FROM chipRun WHERE chip_id = 990001", "test"))
        await db.execute(Query("t_dist", "DELETE FROM distRun WHERE product = 'consp'", "test"))


WRITES = [
    "/clients/some-id/pause",
    "/flags",
    "/loading/cons9",
    "/loading/cons9/queue",
    "/batches/cons9/purge",
    "/runs/set-state",
    "/runs/update-preview",
    "/runs/update",
    "/storage/volume",
    "/storage/audit",
    "/dist/retry",
]


#: What acts on the whole site: a flag with no scope (the empty form's), a volume's state.
ADMIN_WRITES = {"/flags", "/storage/volume"}


async def test_every_write_route_is_refused_to_a_viewer_and_open_to_operators_and_admins(console, db):
    """Issue 33: `admin` granted nothing beyond operator; site-wide writes are an admin's."""
    for user, refused in (("vic", set(WRITES)), ("alice", ADMIN_WRITES), ("ada", set())):
        async with _session() as http:
            assert await _login(http, console, user) == 303
            csrf = await _csrf(http, console)
            for path in WRITES:
                async with http.post(f"{console.url}{path}", data={"csrf": csrf}) as r:
                    text = await r.text()
                    if path in refused:
                        role = "a viewer" if user == "vic" else "an operator"
                        assert r.status == 403 and f"refused: {role} may not" in text, (user, path, text)
                    else:  # past the role check: ippctl's own answer to an empty form
                        assert r.status in (200, 400) and "refused:" not in text, (user, path, text[:200])
                async with http.post(f"{console.url}{path}", data={}) as r:  # no CSRF token: refused for all
                    assert r.status == 403 and "CSRF" in await r.text(), (user, path)
    refusals = await db.fetch_all(
        Query("t_ref", "SELECT action, result FROM console_audit WHERE user = 'alice' AND ok = 0", "test")
    )
    assert {r["action"] for r in refusals if "may not" in r["result"]} == {"flag_", "volume_state"}


async def test_the_overview_shows_the_metrics_agent_s_plots_and_serves_only_those(console):
    async with _session() as http:
        assert await _login(http, console, "vic") == 303
        async with http.get(f"{console.url}/") as r:
            assert 'src="/plots/cons_P2_2026_1202_101010.png"' in await r.text()
        async with http.get(f"{console.url}/plots/cons_P2_2026_1202_101010.png") as r:
            assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
        for bad in ("..%2F..%2Fetc%2Fpasswd", "nosuch.png"):
            async with http.get(f"{console.url}/plots/{bad}") as r:
                assert r.status == 404, bad


ATTEMPTS = Query("t_attempts", "SELECT attempts FROM console_login_attempt WHERE scope = %(scope)s", "test")


async def test_a_burst_of_sixty_logins_gets_at_most_five_password_checks_and_other_pages_answer(console, db):
    """The limit holds under concurrency: each attempt is counted in the database before its
    password is checked. 59 wrong passwords at once, and the right one sent while they are
    in flight (once five are counted): at most five checks, the right one refused too, and
    the login page answers meanwhile (scrypt runs off the event loop)."""
    async with _session() as http:
        wrong = [asyncio.create_task(_login(http, console, "alice", f"wrong{i}")) for i in range(59)]

        async def counted() -> bool:
            n = await db.fetch_val(ATTEMPTS, scope="user+address alice 127.0.0.1")
            return n is not None and int(n) >= 5

        await eventually(counted, timeout_s=60, what="five attempts counted")
        right = asyncio.create_task(_login(http, console, "alice"))
        others = [asyncio.create_task(_page(http, console)) for _ in range(5)]
        statuses = await asyncio.gather(*wrong, right)
        pages = await asyncio.gather(*others)
    assert statuses[-1] == 429  # the right password in the burst does not log in
    assert statuses.count(401) <= 5 and statuses.count(401) + statuses.count(429) == 60
    assert pages == [200] * 5
    rows = await db.fetch_all(AUDIT)
    checked = [r for r in rows if r["result"] == "wrong user name or password"]
    assert len(rows) == 60 and len(checked) <= 5 and not [r for r in rows if r["ok"]]


async def _page(http: aiohttp.ClientSession, console: Console) -> int:
    async with http.get(f"{console.url}/login") as r:
        return r.status


async def test_two_console_processes_share_one_count_of_login_attempts(console, db, test_dsn, tmp_path):
    """The count is in the database: a burst spread over two console processes still gets
    at most five checks for one user from one address."""
    port = free_port()
    second = AgentProcess("console", test_dsn, tmp_path, console_port=port, var_dir=str(tmp_path / "var2"))
    try:
        await eventually(lambda: second.events("console_listening"), timeout_s=60, what="a second console")
        other = Console(f"http://127.0.0.1:{port}", second)
        async with _session() as http:
            statuses = await asyncio.gather(
                *(_login(http, c, "alice", f"wrong{i}") for i in range(20) for c in (console, other))
            )
    finally:
        second.kill()
    assert statuses.count(401) <= 5 and statuses.count(429) >= 35


async def test_an_action_name_longer_than_the_audit_holds_is_refused_and_audited_not_a_500(console, db):
    """Issue 33: /clients/ID/<a 70-character command> gave a 500 and no audit row."""
    async with _session() as http:
        assert await _login(http, console, "alice") == 303
        csrf = await _csrf(http, console)
        long = "x" * 70
        async with http.post(
            f"{console.url}/clients/abc/{long}", data={"csrf": csrf}, allow_redirects=False
        ) as r:
            assert r.status < 500, await r.text()
    rows = [r for r in await db.fetch_all(AUDIT) if r["action"].startswith("client_x")]
    assert len(rows) == 1 and not rows[0]["ok"] and len(rows[0]["action"]) <= 64


def test_weak_passwords_are_refused_and_an_admin_needs_a_longer_one(db, test_dsn):
    """Issue 33: `password` and the user's own name were taken, for an admin too."""
    for name, role, password, problem in (
        ("bob", "viewer", "password123", "guessers try first"),
        ("bob", "viewer", "aaaaaaaaaaaa", "guessers try first"),
        ("carol", "operator", "carol-2026!", "may not contain the user name"),
        ("root2", "admin", "Elevenchar1", "for admin needs at least 12"),
    ):
        out = ippctl(
            test_dsn, "console", "user", "add", name, "--role", role, "--password-stdin", stdin=password
        )
        assert out.returncode != 0 and problem in out.stderr, out.stderr
    ok = ippctl(
        test_dsn,
        "console",
        "user",
        "add",
        "root2",
        "--role",
        "admin",
        "--password-stdin",
        stdin="tw3lve chars+",
    )
    assert ok.returncode == 0, ok.stderr
