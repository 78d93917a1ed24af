"""The database layer against a real MariaDB: deadlines, errors, retries, reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pymysql
import pytest

from shared.core.errors import DbError, DbIntegrityError, DbTimeout, DbUnavailable
from shared.core.settings import Settings, parse_dsn
from shared.db.database import Database, Tx
from shared.db.localdb import LocalMariaDB
from shared.db.queries import Q, Query
from shared.db.schema import apply_statements, create_database, drop_database, migrations, upgrade
from shared.observe.metrics import BATCH_STAGES
from sim import workload
from sim.workload import W
from tests.helpers import ROOT, AgentProcess, eventually

SLEEP = Query("t_sleep", "SELECT SLEEP(%(s)s) AS slept", "test")
ONE = Query("t_one", "SELECT 1 AS one", "test")
CONN_ID = Query("t_conn_id", "SELECT CONNECTION_ID() AS id", "test")
KILL = Query("t_kill", "KILL %(id)s", "test")
BAD = Query("t_bad", "SELECT no_such_column FROM clients", "test")
ADD_VOLUME = Query(
    "t_add_volume", "INSERT INTO storage_volume (name, root) VALUES (%(name)s, '/tmp')", "test"
)
LOCK_VOLUME = Query(
    "t_lock_volume", "SELECT vol_id FROM storage_volume WHERE name = %(name)s FOR UPDATE", "test"
)


async def test_a_call_past_its_deadline_raises_dbtimeout_and_the_pool_recovers(db, settings):
    quick = await Database.connect(dataclasses.replace(settings, db_statement_timeout_s=0.3))
    try:
        with pytest.raises(DbTimeout, match=r"t_sleep ran past its 0\.3s deadline"):
            await quick.fetch_one(SLEEP, s=5)
        assert await quick.fetch_val(ONE) == 1
    finally:
        await quick.close()


async def test_driver_errors_become_project_errors_naming_the_query(db):
    await db.execute(ADD_VOLUME, name="v1")
    with pytest.raises(DbIntegrityError, match="t_add_volume"):
        await db.execute(ADD_VOLUME, name="v1")
    with pytest.raises(DbError, match="t_bad: Unknown column 'no_such_column'"):
        await db.fetch_all(BAD)


async def test_a_deadlocked_transaction_is_retried_whole(db):
    """Two transactions lock two rows in opposite orders; the victim of the deadlock is
    re-run from the start and both end up committed."""
    await db.execute(ADD_VOLUME, name="a")
    await db.execute(ADD_VOLUME, name="b")
    first_locked, second_locked = asyncio.Event(), asyncio.Event()
    runs = {"one": 0, "two": 0}

    async def one(tx: Tx) -> None:
        runs["one"] += 1
        await tx.fetch_one(LOCK_VOLUME, name="a")
        first_locked.set()
        if runs["one"] == 1:
            await second_locked.wait()
        await tx.fetch_one(LOCK_VOLUME, name="b")

    async def two(tx: Tx) -> None:
        runs["two"] += 1
        await tx.fetch_one(LOCK_VOLUME, name="b")
        second_locked.set()
        if runs["two"] == 1:
            await first_locked.wait()
        await tx.fetch_one(LOCK_VOLUME, name="a")

    await asyncio.gather(db.transaction(one, name="one"), db.transaction(two, name="two"))
    assert sorted(runs.values()) == [1, 2], runs


async def test_a_killed_connection_is_replaced_transparently(db, settings):
    """The server drops our connection (KILL); the next call reconnects and succeeds."""
    victim = await Database.connect(settings, pool_size=1)
    try:
        conn_id = await victim.fetch_val(CONN_ID)
        await db.execute(KILL, id=conn_id)
        assert await victim.fetch_val(ONE) == 1
        assert await victim.fetch_val(CONN_ID) != conn_id
    finally:
        await victim.close()


async def test_an_unreachable_server_fails_with_a_clear_error(settings):
    bad = dataclasses.replace(settings, db_dsn="mysql://root@127.0.0.1:1/ipp")
    with pytest.raises(DbUnavailable, match=r"127\.0\.0\.1:1/ipp unreachable"):
        await Database.connect(bad, wait_s=0)


@pytest.fixture
def private_server():
    """A MariaDB server of this test's own, on a unix socket, that the test may restart."""
    base = Path(tempfile.mkdtemp(prefix="ippdb", dir="/tmp"))
    server = LocalMariaDB(base)
    server.start()
    yield server
    server.stop(kill=True)


async def test_an_agent_carries_on_after_its_database_server_restarts(
    private_server: LocalMariaDB, settings: Settings, tmp_path: Path
):
    dsn = parse_dsn(private_server.dsn("ipp_restart"))
    own = dataclasses.replace(settings, db_dsn=dsn.url())
    await create_database(own, dsn)
    db = await Database.connect(own)
    try:
        await upgrade(db)
        await workload.create_tables(db)
        for _ in range(3):
            await db.insert(W.work_add, duration_ms=0)
        agent = AgentProcess("workload", dsn.url(), tmp_path)
        try:
            await eventually(lambda: _done(db, 3), what="first items done")
            await asyncio.to_thread(private_server.stop)
            await eventually(lambda: agent.events("heartbeat_failed"), what="agent notices")
            await asyncio.to_thread(private_server.start)
            for _ in range(3):
                await db.insert(W.work_add, duration_ms=0)
            await eventually(lambda: _done(db, 6), timeout_s=30, what="items after restart")
            agent.send(signal.SIGTERM)
            assert await agent.wait() == 0, agent.output()
            assert agent.events("db_reconnect") or agent.events("heartbeat_restored")
            assert await db.fetch_all(W.work_log_duplicates) == []
        finally:
            agent.kill()
    finally:
        await db.close()


async def _done(db: Database, n: int) -> bool:
    counts = {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)}
    return counts.get("done", 0) == n


async def test_notes_are_cut_to_their_column_as_the_schema_says(db):
    """The lengths come from information_schema, not from the code: the run tables' and
    distRun's notes are VARCHAR(255), the PSPS items' VARCHAR(1024) (migrations 0002, 0005,
    0007)."""
    from shared.db.columns import CUT, TextLimits

    limits = await TextLimits.read(db)
    assert limits.lengths[("chipRun", "note")] == 255
    assert limits.lengths[("distRun", "note")] == 255
    assert limits.lengths[("psps_item", "note")] == 1024
    cut = limits.fit("distRun", "note", "x" * 300)
    assert len(cut) == 255 and cut.endswith(CUT)
    assert limits.fit("distRun", "note", "short") == "short"
    with pytest.raises(ValueError, match=r"no text column distRun\.nots"):
        limits.fit("distRun", "nots", "x")


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Python run as another, unprivileged user (uid 65534)."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_the_private_server_runs_unprivileged_and_no_other_local_user_reaches_it(private_server):
    """Issue 33: the private MariaDB ran as root with a passwordless root on a socket every
    user could reach (a user of uid 65534 wrote a root-owned file into a 0700 directory)."""
    status = Path(f"/proc/{private_server.pid()}/status").read_text()
    uid = int(status.split("Uid:")[1].split()[0])
    assert uid == pwd.getpwnam("mysql").pw_uid
    assert private_server.base.stat().st_mode & 0o007 == 0  # the socket's directory: owner and group
    assert private_server.password_file.stat().st_mode & 0o777 == 0o600
    for user in ("root", "ipp"):
        tried = _as_nobody(
            "import pymysql\n"
            f"pymysql.connect(unix_socket={str(private_server.socket)!r}, user={user!r}, connect_timeout=5)\n"
        )
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried.stderr
    dsn = parse_dsn(private_server.dsn("mysql"))
    assert dsn.user == "ipp" and dsn.password  # the agents' own account, with a password
    conn = pymysql.connect(unix_socket=dsn.unix_socket, user=dsn.user, password=dsn.password)
    try:
        with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="secure-file-priv"):
            cur.execute("SELECT 1 INTO OUTFILE %s", (str(private_server.base.parent / "planted.txt"),))
        with conn.cursor() as cur:
            cur.execute("SELECT user, plugin FROM mysql.user WHERE user = 'root'")
            assert cur.fetchall() == (("root", "unix_socket"),)  # only the system's root
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(unix_socket=dsn.unix_socket, user="ipp", password="not-it")


def test_every_query_the_code_names_is_in_the_query_files():
    """A query is looked up by its attribute name when the line runs: one renamed in a .sql
    file and not in a caller crashed that agent only when it reached the line (the update
    agent, once). Every attribute of the query book the code uses must be one of
    shared/db/sql/queries."""
    known = set(Q.names()) | {"names"}
    used: dict[str, str] = {}
    for top in ("agents", "shared", "sim", "bench", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            for name in re.findall(r"\bQ\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()):
                used.setdefault(name, str(path.relative_to(ROOT)))
    unknown = {name: where for name, where in used.items() if name not in known}
    assert len(used) > 100 and unknown == {}, unknown


RUN_COUNTS = Query(
    "t_run_counts",
    "SELECT stage, state, SUM(runs) AS n FROM run_state_count GROUP BY stage, state HAVING SUM(runs) <> 0",
    "test",
)
CHIP_STATES = Query("t_chip_states", "SELECT state, COUNT(*) AS n FROM chipRun GROUP BY state", "test")
STACK_STATES = Query("t_stack_states", "SELECT state, COUNT(*) AS n FROM stackRun GROUP BY state", "test")
CHANGES = [
    "INSERT INTO chipRun (chip_id, exp_id, state, label) VALUES "
    "(9100001, 1, 'full', 't.count'), (9100002, 1, 'full', 't.count'), (9100003, 1, 'new', 't.count'), "
    "(9100017, 1, 'goto_cleaned', 't.count')",
    "INSERT INTO stackRun (stack_id, state, skycell_id, tess_id) VALUES (9100001, 'new', 's', 't')",
    # a claim sets the owner only; the IPP's tools change many rows in one statement
    "UPDATE chipRun SET owner = 'c' WHERE chip_id = 9100017",
    "UPDATE chipRun SET state = 'goto_cleaned' WHERE label = 't.count' AND state = 'full'",
    "UPDATE chipRun SET state = 'cleaned', owner = NULL WHERE chip_id IN (9100001, 9100017)",
    "UPDATE chipRun SET chip_id = 9100018 WHERE chip_id = 9100003",
    "UPDATE stackRun SET state = 'full' WHERE stack_id = 9100001",
    "DELETE FROM chipRun WHERE chip_id = 9100002",
]


async def _counts_match_the_tables(db: Database) -> dict[str, dict[str, int]]:
    kept: dict[str, dict[str, int]] = {}
    for r in await db.fetch_all(RUN_COUNTS):
        kept.setdefault(r["stage"], {})[r["state"]] = int(r["n"])
    for stage, query in (("chip", CHIP_STATES), ("stack", STACK_STATES)):
        assert kept.get(stage, {}) == {r["state"]: int(r["n"]) for r in await db.fetch_all(query)}, stage
    return kept


async def test_run_state_counts_follow_every_insert_update_and_delete_of_runs(db):
    """The console and the metrics agent read runs per stage and state from run_state_count
    (migration 0021), not from a GROUP BY over a million runs: its triggers must follow every
    change, however it is made."""
    before = await _counts_match_the_tables(db)
    for statement in CHANGES:
        await db.execute(Query("t_change", statement, "test"))
    after = await _counts_match_the_tables(db)
    assert after["chip"].get("cleaned", 0) - before.get("chip", {}).get("cleaned", 0) == 2
    assert after["stack"].get("full", 0) - before.get("stack", {}).get("full", 0) == 1
    await db.execute(Query("t_undo", "DELETE FROM chipRun WHERE chip_id > 9100000", "test"))
    await db.execute(Query("t_undo", "DELETE FROM stackRun WHERE stack_id > 9100000", "test"))
    assert await _counts_match_the_tables(db) == {s: c for s, c in before.items() if c}


async def test_the_count_migration_counts_the_runs_a_database_already_holds(settings, test_dsn):
    dsn = parse_dsn(test_dsn).with_database(parse_dsn(test_dsn).database + "_counts")
    await drop_database(settings, dsn)
    await create_database(settings, dsn)
    other = await Database.connect(settings, dsn, pool_size=2)
    try:
        await upgrade(other)
        undo = ["DROP TABLE run_state_count"] + [
            f"DROP TRIGGER {table}_{verb}"
            for table in ("chipRun", "camRun", "warpRun", "diffRun", "stackRun")
            for verb in ("counted", "recounted", "uncounted")
        ]
        await apply_statements(other, undo, name="t_before_0021")
        for statement in CHANGES[:2]:
            await other.execute(Query("t_change", statement, "test"))
        counts = next(m for m in migrations() if m.name == "run_state_counts")
        await apply_statements(other, counts.statements(), name="t_0021")
        kept = await _counts_match_the_tables(other)
        assert kept == {"chip": {"full": 2, "new": 1, "goto_cleaned": 1}, "stack": {"new": 1}}
    finally:
        await other.close()
        await drop_database(settings, dsn)


BATCH_COUNTS = Query(
    "t_batch_counts",
    "SELECT stage, outcome, SUM(batches) AS n FROM psps_batch_count WHERE config = 't.count' "
    "GROUP BY stage, outcome HAVING SUM(batches) <> 0",
    "test",
)
BATCH_OUTCOMES = Query(
    "t_batch_outcomes",
    " UNION ALL ".join(
        f"SELECT '{stage}' AS stage, {stage} AS outcome, COUNT(*) AS n FROM psps_batch "
        f"WHERE config = 't.count' GROUP BY {stage}"
        for stage in BATCH_STAGES
    ),
    "test",
)
BATCH_CHANGES = [
    "INSERT INTO psps_batch (name, config, type, item_id, processed, loaded_to_datastore, "
    "loaded_to_datastore_at) VALUES ('tc1', 't.count', 'P2', 1, 'succeeded', 'succeeded', NOW(6)), "
    "('tc2', 't.count', 'P2', 2, 'succeeded', 'succeeded', NOW(6)), ('tc3', 't.count', 'ST', 3, "
    "'failed', 'pending', NULL)",
    # an ODM answer moves three stages of many batches in one statement (odm_poller)
    "UPDATE psps_batch SET loaded_to_odm = 'succeeded', merge_worthy = 'succeeded', merged = "
    "'succeeded', odm_done = 1 WHERE config = 't.count' AND loaded_to_datastore = 'succeeded'",
    "UPDATE psps_batch SET odm_checked_at = NOW(6) WHERE config = 't.count'",
    "UPDATE psps_batch SET deleted_datastore = 'failed' WHERE name = 'tc2'",
    "DELETE FROM psps_batch WHERE name = 'tc1'",
]


async def _batch_counts_match(db: Database) -> dict[tuple[str, str], int]:
    kept = {(r["stage"], r["outcome"]): int(r["n"]) for r in await db.fetch_all(BATCH_COUNTS)}
    assert kept == {(r["stage"], r["outcome"]): int(r["n"]) for r in await db.fetch_all(BATCH_OUTCOMES)}
    return kept


async def test_batch_counts_follow_every_insert_update_and_delete_of_batches(db):
    """ippctl metrics reads batches per stage and outcome from psps_batch_count (kept by the
    triggers of migration 0023, one statement per changed stage): after each change they equal
    a GROUP BY over the batches."""
    for statement in BATCH_CHANGES:
        await db.execute(Query("t_change", statement, "test"))
        await _batch_counts_match(db)
    kept = await _batch_counts_match(db)
    assert kept[("merged", "succeeded")] == 1 and kept[("deleted_datastore", "failed")] == 1
    assert kept[("processed", "failed")] == 1 and ("merged", "pending") in kept
    await db.execute(Query("t_undo", "DELETE FROM psps_batch WHERE config = 't.count'", "test"))
    assert await _batch_counts_match(db) == {}
