"""ippctl and ipp-agent as an operator uses them: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiomysql
import pytest

from shared.core.settings import parse_dsn
from shared.db.database import Database
from shared.db.queries import Q
from shared.db.schema import CODE_SCHEMA_VERSION, drop_database, upgrade_lock_name
from tests.helpers import ROOT, agent_env, eventually, run_ippctl


def run(args: list[str], dsn: str, *, prog: str = "ippctl", **env: str) -> subprocess.CompletedProcess[str]:
    module = "shared.ctl.main" if prog == "ippctl" else "agents"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**agent_env(dsn), **env},
        timeout=60,
        check=False,
    )


async def test_clients_list_shows_a_running_agent_with_its_heartbeat(db, spawn, test_dsn):
    agent = spawn("workload", "--config", "demo")
    cid = await eventually(agent.client_id, what="agent_started")
    listing = run(["clients", "list"], test_dsn)
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split()[:6] == ["ID", "AGENT", "HOST", "PID", "CONFIG", "STATUS"]
    (line,) = [ln for ln in lines if ln.startswith(cid)]
    assert " workload " in line and f" {agent.pid} " in line and " demo " in line
    data = json.loads(run(["clients", "list", "--json"], test_dsn).stdout)
    (row,) = [c for c in data["clients"] if c["client_id"] == cid]
    assert row["status"] == "running" and row["heartbeat_age_s"] < 5
    agent.send(signal.SIGTERM)
    assert await agent.wait() == 0


async def test_pause_resume_and_stop_by_agent_and_by_id(db, spawn, test_dsn):
    agent = spawn("workload")
    cid = await eventually(agent.client_id, what="agent_started")

    paused = run(["clients", "pause", "--agent", "workload"], test_dsn)
    assert paused.returncode == 0, paused.stderr
    assert "standing flag set for agent=workload host=* config=*" in paused.stdout
    await eventually(lambda: _status(db, cid, "paused"), timeout_s=5, what="paused")
    listing = run(["clients", "list"], test_dsn).stdout
    assert "standing flags:" in listing

    resumed = run(["clients", "resume", "--agent", "workload"], test_dsn)
    assert "cleared 1 standing flag(s)" in resumed.stdout
    await eventually(lambda: _status(db, cid, "running"), timeout_s=5, what="running")

    stopped = run(["clients", "stop", "--id", cid], test_dsn)
    assert stopped.returncode == 0 and f"stop: client {cid}" in stopped.stdout
    assert await agent.wait() == 0
    again = run(["clients", "stop", "--id", cid], test_dsn)
    assert again.returncode == 1
    assert again.stderr.strip() == f"ippctl: error: client {cid} is stopped; nothing to stop"


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["clients", "list"], {"IPP_DB_DSN": "postgres://x@h/db"}, 2, "scheme must be mysql://"),
        (
            ["clients", "list"],
            {"IPP_DB_DSN": "mysql://root@127.0.0.1:1/ipp"},
            1,
            "127.0.0.1:1/ipp unreachable",
        ),
        (["clients", "pause", "--id", "nope"], {}, 1, "no client with id nope"),
        (["clients", "pause"], {}, 1, "say which clients"),
        (["storage", "stat", "neb://any/a/../b"], {}, 1, "'..' is not allowed in a path"),
        (["storage", "stat", "neb://any/not/there"], {}, 1, "neb:///not/there does not exist"),
        (["storage", "volume", "add", "v", "relative"], {}, 1, "must be an absolute path"),
    ],
)
def test_bad_input_gives_one_line_and_a_nonzero_exit(db, test_dsn, args, env, code, message):
    result = run(args, test_dsn, **env)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ippctl: error: ") and message in lines[0]


def test_a_malformed_mdc_file_is_reported_with_its_line(tmp_path, test_dsn):
    path = tmp_path / "dbinfo.chip.1.mdc"
    path.write_text("chipRun  METADATA\n   chip_id  S64  abc\nEND\n")
    result = run(["mdc", "check", str(path)], test_dsn)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"ippctl: error: {path}:2: chip_id: 'abc' is not a S64 integer: 'chip_id  S64  abc'"
    )


def test_an_unknown_agent_is_refused_listing_the_known_ones(test_dsn):
    result = run(["nosuch"], test_dsn, prog="ipp-agent")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ipp-agent: error: unknown agent 'nosuch' (known agents: batch_cleaner, cleanup, console, "
        "dist_client, dist_server, loader, metrics, odm_poller, sweeper, update, workload)"
    )


@pytest.mark.parametrize("agent", ["loader", "odm_poller", "batch_cleaner", "metrics"])
def test_a_per_config_agent_given_an_unknown_config_says_so_before_registering(agent, test_dsn, tmp_path):
    """Seed 003: a program's config argument is "the name of a particular config currently in
    the config table"; one that is not there is a start-up error, not a crash."""
    result = run(
        [agent, "--config", "nosuch", "--once"],
        test_dsn,
        prog="ipp-agent",
        IPP_VAR_DIR=str(tmp_path),
        IPP_LOG_DIR="",
    )
    assert result.returncode == 1, result.stderr
    assert "ipp-agent: error: no loading config 'nosuch'" in result.stderr
    assert '"agent_crashed"' not in result.stdout


async def test_storage_commands_round_trip_a_file(db, test_dsn, tmp_path):
    root = tmp_path / "vol"
    assert run(["storage", "volume", "add", "v1", str(root)], test_dsn).returncode == 0
    source = tmp_path / "in.fits"
    source.write_bytes(os.urandom(5000))
    put = run(["storage", "put", "neb://v1/a/in.fits", str(source)], test_dsn)
    assert put.returncode == 0 and "5000 bytes" in put.stdout
    located = run(["storage", "locate", "neb:///a/in.fits"], test_dsn).stdout.strip()
    assert Path(located).read_bytes() == source.read_bytes()
    stat = json.loads(run(["storage", "stat", "neb:///a/in.fits", "--json"], test_dsn).stdout)
    assert stat["bytes"] == 5000 and stat["instances"][0]["volume"] == "v1"
    assert run(["storage", "rm", "neb:///a/in.fits"], test_dsn).returncode == 0
    assert not os.path.exists(located)


async def test_db_status_and_upgrade_report_the_schema_version(db, test_dsn):
    status = run(["db", "status"], test_dsn)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"database schema: {CODE_SCHEMA_VERSION}" in status.stdout
    upgrade = run(["db", "upgrade"], test_dsn)
    assert upgrade.returncode == 0
    assert f"already at schema version {CODE_SCHEMA_VERSION}" in upgrade.stdout


async def _status(db: Database, cid: str, status: str) -> bool:
    rows = await db.fetch_all(Q.list_clients, all=True)
    return any(r["client_id"] == cid and r["status"] == status for r in rows)


async def test_storage_audit_reports_disagreements_and_removes_old_temporaries(db, test_dsn, tmp_path):
    """Temporaries alone keep exit 0; --remove-temporaries deletes only those untouched for
    the hours given; a file nobody registered makes the exit 1; bad hours are refused."""
    root = tmp_path / "vol"
    assert run(["storage", "volume", "add", "v1", str(root)], test_dsn).returncode == 0
    source = tmp_path / "in.fits"
    source.write_bytes(b"pixels")
    assert run(["storage", "put", "neb://v1/a/in.fits", str(source)], test_dsn).returncode == 0
    old, young = root / "a" / ".x.fits.tmp-0123456789ab", root / "a" / ".y.fits.tmp-ba9876543210"
    old.write_bytes(b"half")
    young.write_bytes(b"half")
    then = time.time() - 3 * 3600
    os.utime(old, (then, then))
    audit = run(["storage", "audit"], test_dsn)
    assert audit.returncode == 0, audit.stderr
    assert "temporaries left by killed writers: 2" in audit.stdout
    removed = run(["storage", "audit", "--remove-temporaries", "2"], test_dsn)
    assert removed.returncode == 0
    assert (
        "temporaries removed (untouched for 2 h or more): 1\n  v1:a/.x.fits.tmp-0123456789ab"
        in removed.stdout
    )
    assert not old.exists() and young.exists()
    (root / "a" / "stray.fits").write_bytes(b"?")
    report = json.loads(run(["storage", "audit", "--json"], test_dsn).stdout)
    assert report["orphans"] == ["v1:a/stray.fits"]
    assert report["temporaries"] == ["v1:a/.y.fits.tmp-ba9876543210"]
    assert run(["storage", "audit"], test_dsn).returncode == 1
    bad = run(["storage", "audit", "--remove-temporaries", "0"], test_dsn)
    assert bad.returncode == 2 and "'0' is not a positive number of hours" in bad.stderr


async def test_two_upgrades_at_once_wait_for_each_other_and_apply_each_migration_once(settings, test_dsn):
    """Both wait while another holder has the upgrade lock (as a third host would), then one
    creates the database and applies every migration, the other finds nothing to do."""
    fresh = parse_dsn(test_dsn).with_database(f"{parse_dsn(test_dsn).database}_up")
    holder = await aiomysql.connect(**{k: v for k, v in fresh.connect_kwargs().items() if k != "db"})
    try:
        async with holder.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, 0)", (upgrade_lock_name(fresh.database),))
            assert (await cur.fetchone())[0] == 1
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "shared.ctl.main", "db", "upgrade"],
                cwd=ROOT,
                env=agent_env(fresh.url()),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]

        async def both_wait() -> bool:
            async with holder.cursor() as cur:
                await cur.execute(
                    "SELECT COUNT(*) FROM information_schema.processlist "
                    "WHERE info LIKE 'SELECT GET_LOCK(%%ipp_schema_upgrade%%'"
                )
                return bool((await cur.fetchone())[0] == 2)

        await eventually(both_wait, timeout_s=60, what="both upgrades waiting for the lock")
        async with holder.cursor() as cur:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (upgrade_lock_name(fresh.database),))
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        stdout = "".join(o for o, _ in outs)
        assert stdout.count("created database") == 1, stdout
        assert stdout.count(f"-> {CODE_SCHEMA_VERSION} (") == 1, stdout
        assert stdout.count(f"already at schema version {CODE_SCHEMA_VERSION}") == 1, stdout
        assert all(
            "another upgrade of" in err and "holds lock ipp_schema_upgrade." in err for _, err in outs
        ), outs
        async with holder.cursor() as cur:
            await cur.execute(
                f"SELECT version, COUNT(*) FROM `{fresh.database}`.schema_migration GROUP BY version"
            )
            counts = dict(await cur.fetchall())
        assert counts == {v: 1 for v in range(1, CODE_SCHEMA_VERSION + 1)}
    finally:
        holder.close()
        await drop_database(settings, fresh)


@pytest.mark.parametrize(
    ("module", "argv", "setting"),
    [
        ("agents", ["metrics", "--config", "all"], "IPP_METRICS_PORT"),
        ("agents", ["dist_server"], "IPP_DS_PORT"),
        ("agents", ["console"], "IPP_CONSOLE_PORT"),
        ("sim", ["psps"], "IPP_ODM_PORT"),
    ],
)
async def test_a_server_whose_port_is_taken_stops_at_once_naming_the_port_and_its_holder(
    db, settings, test_dsn, module, argv, setting
):
    psps = parse_dsn(test_dsn).with_database(f"{parse_dsn(test_dsn).database}_portpsps")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        env = {
            **agent_env(test_dsn),
            setting: str(port),
            "IPP_LOG_FORMAT": "json",
            "IPP_PSPS_DB_NAME": psps.database,
        }
        out = subprocess.run(
            [sys.executable, "-m", module, *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        taken.close()
        await drop_database(settings, psps)
    assert out.returncode == 1, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert f"cannot listen on 127.0.0.1:{port}: the port is taken by pid {os.getpid()}" in line
    assert "Traceback" not in out.stdout + out.stderr
    running = [
        r
        for r in await db.fetch_all(Q.list_clients, all=True)
        if r["status"] in ("running", "paused", "stopping")
    ]
    assert running == []


def test_a_standing_flag_scope_that_is_not_a_name_is_refused_and_nothing_stored(test_dsn):
    """Issue 33: `ippctl clients pause --agent $'cleanup\\n'` was stored and matched nothing."""
    out = run_ippctl(test_dsn, "clients", "pause", "--agent", "cleanup\n")
    assert out.returncode != 0 and "agent 'cleanup\\n' is not a name" in out.stderr, out.stderr
    out = run_ippctl(test_dsn, "clients", "pause", "--agent", "cleanup", "--host", "h 1")
    assert out.returncode != 0 and "host 'h 1' is not a name" in out.stderr


def test_what_an_agent_writes_is_not_readable_by_every_user(test_dsn, tmp_path):
    """Issue 33: no umask: logs and exports were world-readable (0644)."""
    logs = tmp_path / "logs"
    ran = subprocess.run(
        [sys.executable, "-m", "agents", "sweeper", "--once", "--log-dir", str(logs)],
        cwd=ROOT, env=agent_env(test_dsn), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    written = [p for p in logs.rglob("*") if p.is_file()]
    assert written and all(p.stat().st_mode & 0o007 == 0 for p in written), [
        oct(p.stat().st_mode) for p in written
    ]
