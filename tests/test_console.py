"""The operators' console (issue 20) over real HTTP on 127.0.0.1: logins, roles, CSRF, the
rate limit, control through the same code path as ippctl clients, the audit. The browser
tests are in test_console_browser.py."""

from __future__ import annotations

import re

import aiohttp

from shared.db.database import Database
from shared.db.queries import Query
from tests.console_fixture import AUDIT, CLIENT, PASSWORD, USERS, Console, ippctl
from tests.helpers import eventually


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
        for _ in range(3):
            assert await _login(http, console, "alice", "wrong") == 401
        assert await _login(http, console, "alice") == 429  # even the right one, for a minute
    rows = await db.fetch_all(AUDIT)
    assert [(r["action"], r["ok"]) for r in rows] == [("login", 0)] * 6
    assert rows[0]["result"] == "wrong user name or password" and rows[0]["remote"] == "127.0.0.1"
    assert "too many failed logins" in rows[-1]["result"]
    for user in await db.fetch_all(USERS):
        assert user["password_hash"].startswith("scrypt$16384$8$1$") and PASSWORD not in user["password_hash"]


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
