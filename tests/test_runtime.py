"""The agent contract, checked on real agent processes against a real MariaDB."""

from __future__ import annotations

import signal
import socket
from typing import Any

from shared.db.database import Database
from shared.db.queries import Q, Query
from shared.db.schema import CODE_SCHEMA_VERSION
from sim.workload import W
from tests.helpers import eventually

GET_CLIENT = Query(
    "t_get_client",
    "SELECT client_id, status, heartbeat_at, current_item, items_done, last_error, ended_at "
    "FROM clients WHERE client_id = %(client_id)s",
    "test",
)


async def add_items(db: Database, n: int, duration_ms: int = 0) -> list[int]:
    return [await db.insert(W.work_add, duration_ms=duration_ms) for _ in range(n)]


async def client(db: Database, client_id: str | None) -> dict[str, Any]:
    """The clients row of ``client_id`` ({} while the agent has not registered)."""
    if client_id is None:
        return {}
    return await db.fetch_one(GET_CLIENT, client_id=client_id) or {}


async def counts(db: Database) -> dict[str, int]:
    return {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)}


async def test_once_processes_everything_pending_and_exits_zero(db, spawn) -> None:
    """--once: every pending item done exactly once, exit 0, client row marked stopped."""
    await add_items(db, 12)
    agent = spawn("workload", "--once")
    assert await agent.wait() == 0, agent.output()
    assert await counts(db) == {"done": 12}
    assert await db.fetch_all(W.work_log_duplicates) == []
    row = await client(db, agent.client_id())
    assert row["status"] == "stopped" and row["items_done"] == 12


async def test_heartbeat_advances_on_the_database_clock(db, spawn) -> None:
    """The heartbeat row is rewritten every interval while the agent idles."""
    agent = spawn("workload")
    cid = await eventually(agent.client_id, what="agent_started")
    first = (await eventually(lambda: client(db, cid), what="clients row"))["heartbeat_at"]

    async def advanced_twice() -> bool:
        row = await client(db, cid)
        return bool(row) and (row["heartbeat_at"] - first).total_seconds() >= 0.55

    await eventually(advanced_twice, timeout_s=10, what="heartbeat to advance two intervals")
    agent.send(signal.SIGTERM)
    assert await agent.wait() == 0


async def test_pause_is_honoured_within_two_heartbeats_and_resume_continues(db, spawn) -> None:
    """A paused client takes no more items but keeps heartbeating; resume continues."""
    interval = 1.0
    agent = spawn("workload", heartbeat_interval_s=interval, poll_interval_s=5.0)
    cid = await eventually(agent.client_id, what="agent_started")
    await db.execute(Q.command_client, client_id=cid, command="pause")
    # Honoured within two heartbeat intervals (plus one for a busy shared machine).
    await eventually(lambda: _status_is(db, cid, "paused"), timeout_s=3 * interval, what="status paused")
    paused_beat = (await client(db, cid))["heartbeat_at"]
    await add_items(db, 5)

    async def beat_while_paused() -> bool:
        row = await client(db, cid)
        return bool(row.get("status") == "paused" and row["heartbeat_at"] > paused_beat)

    await eventually(beat_while_paused, timeout_s=5, what="heartbeat while paused")
    assert await counts(db) == {"pending": 5}, "a paused agent took work"

    await db.execute(Q.command_client, client_id=cid, command="resume")
    await eventually(lambda: _counts_are(db, {"done": 5}), timeout_s=10, what="items done")
    assert (await client(db, cid))["status"] == "running"
    agent.send(signal.SIGTERM)
    assert await agent.wait() == 0


async def test_stop_command_exits_zero_and_marks_client_stopped(db, spawn) -> None:
    agent = spawn("workload")
    cid = await eventually(agent.client_id, what="agent_started")
    await db.execute(Q.command_client, client_id=cid, command="stop")
    assert await agent.wait() == 0, agent.output()
    row = await client(db, cid)
    assert row["status"] == "stopped" and row["ended_at"] is not None


async def test_standing_flags_match_agent_host_and_config(db, spawn) -> None:
    """A standing pause for another host or config leaves the client alone; its own pauses it."""
    agent = spawn("workload", "--config", "night")
    cid = await eventually(agent.client_id, what="agent_started")
    host = socket.gethostname()
    for scope in ({"host": "elsewhere", "config": ""}, {"host": "", "config": "day"}):
        await db.execute(Q.set_standing_flag, agent="workload", command="pause", set_by="t", **scope)
    await add_items(db, 2)
    await eventually(lambda: _counts_are(db, {"done": 2}), what="unaffected client works")

    await db.execute(
        Q.set_standing_flag, agent="workload", host=host, config="night", command="pause", set_by="t"
    )
    await eventually(lambda: _status_is(db, cid, "paused"), timeout_s=5, what="paused by flag")
    await db.execute(Q.clear_standing_flags, agent="workload", host=host, config="night")
    await eventually(lambda: _status_is(db, cid, "running"), timeout_s=5, what="running again")

    await db.execute(Q.set_standing_flag, agent="", host="", config="", command="stop", set_by="t")
    assert await agent.wait() == 0
    assert (await client(db, cid))["status"] == "stopped"


async def test_sigterm_mid_item_drains_the_item_and_exits_zero(db, spawn) -> None:
    """SIGTERM while an item is in progress: it is finished (within the deadline), exit 0."""
    (item,) = await add_items(db, 1, duration_ms=1500)
    agent = spawn("workload", drain_timeout_s=10)
    cid = await eventually(agent.client_id, what="agent_started")
    await eventually(lambda: _owner_is(db, item, cid), what="item claimed")
    agent.send(signal.SIGTERM)
    assert await agent.wait() == 0, agent.output()
    row = await db.fetch_one(W.work_get, item_id=item)
    assert row["state"] == "done" and row["owner"] is None
    assert len(await db.fetch_all(W.work_log_for, item_id=item)) == 1
    assert agent.events("drain_started")


async def test_sigterm_past_the_drain_deadline_hands_the_item_back(db, spawn) -> None:
    """An item that cannot finish within the drain deadline is handed back unprocessed."""
    (item,) = await add_items(db, 1, duration_ms=60_000)
    agent = spawn("workload", drain_timeout_s=1)
    cid = await eventually(agent.client_id, what="agent_started")
    await eventually(lambda: _owner_is(db, item, cid), what="item claimed")
    agent.send(signal.SIGTERM)
    assert await agent.wait(timeout_s=15) == 0, agent.output()
    row = await db.fetch_one(W.work_get, item_id=item)
    assert row["state"] == "pending" and row["owner"] is None
    assert await db.fetch_all(W.work_log_for, item_id=item) == []
    stopped = agent.events("agent_stopped")
    assert stopped and stopped[0]["claims_handed_back"] == 1
    assert agent.events("drain_deadline_passed")


async def test_sigkill_mid_item_is_released_and_finished_once_by_another(db, spawn) -> None:
    """SIGKILL mid-item: the sweeper declares the client dead, releases its claim, and a
    second client finishes the item exactly once."""
    (item,) = await add_items(db, 1, duration_ms=1500)
    first = spawn("workload")
    first_id = await eventually(first.client_id, what="first agent_started")
    await eventually(lambda: _owner_is(db, item, first_id), what="item claimed by first")
    first.kill()

    second = spawn("workload")
    second_id = await eventually(second.client_id, what="second agent_started")
    await eventually(lambda: _counts_are(db, {"done": 1}), timeout_s=20, what="item done")
    log = await db.fetch_all(W.work_log_for, item_id=item)
    assert [r["client_id"] for r in log] == [second_id]
    assert (await client(db, first_id))["status"] == "dead"
    second.send(signal.SIGTERM)
    assert await second.wait() == 0


async def test_schema_mismatch_refuses_to_start_naming_both_versions(db, spawn) -> None:
    set_version = Query("t_set_version", "UPDATE dbversion SET schema_version = %(v)s", "test")
    await db.execute(set_version, v=999)
    try:
        agent = spawn("workload", "--once")
        assert await agent.wait() == 1
        out = agent.output()
        assert "schema version 999" in out and f"this code's {CODE_SCHEMA_VERSION}" in out
    finally:
        await db.execute(set_version, v=CODE_SCHEMA_VERSION)
    assert await db.fetch_val(Q.schema_version) == CODE_SCHEMA_VERSION


async def _status_is(db: Database, cid: str, status: str) -> bool:
    row = await client(db, cid)
    return row.get("status") == status


async def _counts_are(db: Database, expected: dict[str, int]) -> bool:
    return await counts(db) == expected


async def _owner_is(db: Database, item: int, cid: str | None) -> bool:
    row = await db.fetch_one(W.work_get, item_id=item)
    return row is not None and cid is not None and row["owner"] == cid


async def test_a_client_declared_dead_exits_nonzero_so_a_fresh_one_starts(db, spawn):
    """If the sweeper declared this client dead (its claims are gone), it must not carry on."""
    agent = spawn("workload")
    cid = await eventually(agent.client_id, what="agent_started")
    await db.execute(
        Query("t_dead", "UPDATE clients SET status = 'dead' WHERE client_id = %(id)s", "test"), id=cid
    )
    assert await agent.wait() == 1
    assert agent.events("client_declared_dead")
    assert (await client(db, cid))["status"] == "dead"
