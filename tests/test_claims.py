"""Claiming with SKIP LOCKED through the runtime's claim helper, against a real MariaDB."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import uuid
import zlib
from collections import Counter

import pytest

from agents import sweeper as sweeper_agent
from shared.claimables import CLAIMABLES
from shared.core.errors import ClaimLost
from shared.core.settings import Settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Q, Query
from shared.runtime.agent import AgentContext, AgentRunner, AgentSpec
from shared.runtime.claims import Claimer, NodePosition
from shared.runtime.clients import ClientIdentity
from shared.runtime.sweeper import sweep
from sim.workload import SPEC, W
from tests.dbproxy import lossy_proxy
from tests.helpers import AgentProcess, eventually

MARK_DEAD = Query("t_mark_dead", "UPDATE clients SET status = 'dead' WHERE client_id = %(id)s", "test")
GET_CLIENT = Query("t_client", "SELECT status, last_error FROM clients WHERE client_id = %(id)s", "test")


async def register(db: Database, agent: str = "workload") -> str:
    identity = ClientIdentity.fresh(agent, "")
    await db.execute(
        Q.register_client,
        client_id=identity.client_id,
        agent=agent,
        host=identity.host,
        pid=identity.pid,
        config="",
        version="test",
    )
    return identity.client_id


async def test_two_dozen_concurrent_claimers_never_take_the_same_row(db, settings):
    """24 claimers, each on its own connection, race over 600 rows: every row is claimed
    and finished exactly once."""
    for _ in range(600):
        await db.insert(W.work_add, duration_ms=0)
    pools = [await Database.connect(settings, pool_size=1) for _ in range(24)]
    taken: list[list[int]] = [[] for _ in pools]

    async def claimer(i: int) -> None:
        claims = Claimer(pools[i], await register(pools[i]))
        while rows := await claims.claim(SPEC, limit=1 + i % 3):
            for row in rows:
                taken[i].append(row["item_id"])
                await claims.finish(SPEC, W.work_finish, row["item_id"])

    try:
        await asyncio.gather(*(claimer(i) for i in range(len(pools))))
    finally:
        for pool in pools:
            await pool.close()
    every = [item for per in taken for item in per]
    duplicates = [item for item, n in Counter(every).items() if n > 1]
    assert duplicates == []
    assert len(every) == 600
    assert sum(1 for per in taken if per) > 1, "only one claimer ever won a row"
    assert {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)} == {"done": 600}


def _share(item_id: int, nodes: int) -> int:
    return zlib.crc32(str(item_id).encode()) % nodes


async def test_a_single_server_has_no_node_affinity(db):
    """Off Galera a claimer is node 0 of 1: its claims are the plain SKIP LOCKED ones."""
    assert await Claimer(db, "t").position() == NodePosition(0, 1)


async def test_a_claimer_takes_its_nodes_share_first_then_steals_the_rest(db, settings):
    """Claimers that know themselves as nodes 0 and 1 of 2, racing over 300 rows: each takes
    rows of its own share (CRC32(id) MOD 2) while any is free, then the other's; every row is
    done exactly once."""
    for _ in range(300):
        await db.insert(W.work_add, duration_ms=0)
    pools = [await Database.connect(settings, pool_size=1) for _ in range(2)]
    taken: list[list[int]] = [[], []]

    async def claimer(node: int) -> None:
        claims = Claimer(pools[node], await register(pools[node]), NodePosition(node, 2))
        while rows := await claims.claim(SPEC, limit=1 + node):
            for row in rows:
                taken[node].append(row["item_id"])
                await claims.finish(SPEC, W.work_finish, row["item_id"])

    try:
        await asyncio.gather(claimer(0), claimer(1))
    finally:
        for pool in pools:
            await pool.close()
    every = taken[0] + taken[1]
    assert sorted(every) == sorted(set(every)) and len(every) == 300
    for node in (0, 1):
        shares = [_share(item, 2) for item in taken[node]]
        own = shares.count(node)
        # its own share first: no row of the other's before the last of its own
        assert own > 0 and node not in shares[own:], (node, shares)
    assert {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)} == {"done": 300}


async def test_a_claimer_whose_share_is_all_taken_still_gets_the_others_rows(db):
    """Stealing: node 1 of 3 finds every row of its share owned by someone else and claims a
    row of another share instead of reporting no work."""
    ids = [await db.insert(W.work_add, duration_ms=0) for _ in range(30)]
    mine = tuple(i for i in ids if _share(i, 3) == 1)
    await db.execute(W.work_claim_mark, owner=await register(db), ids=mine)
    near = Claimer(db, await register(db), NodePosition(1, 3))
    rows = await near.claim(SPEC, limit=1)
    assert len(rows) == 1 and _share(rows[0]["item_id"], 3) != 1


async def test_a_stale_owner_can_never_finish_a_released_row(db, settings):
    """Once the sweeper released a dead client's claim and another client finished the row,
    the first client's finish raises ClaimLost and changes nothing."""
    item = await db.insert(W.work_add, duration_ms=0)
    first = Claimer(db, await register(db))
    assert [r["item_id"] for r in await first.claim(SPEC)] == [item]

    await db.execute(MARK_DEAD, id=first.owner)
    result = await sweep(db, settings, [SPEC])
    assert result.claims_released == {"sim_work": 1}

    second = Claimer(db, await register(db))
    assert [r["item_id"] for r in await second.claim(SPEC)] == [item]
    await second.finish(SPEC, W.work_finish, item)
    with pytest.raises(ClaimLost, match=f"item_id={item} is no longer claimed"):
        await first.finish(SPEC, W.work_finish, item)
    row = await db.fetch_one(W.work_get, item_id=item)
    assert row["state"] == "done" and row["owner"] is None


async def test_claims_of_a_vanished_client_row_are_released(db, settings):
    item = await db.insert(W.work_add, duration_ms=0)
    ghost = Claimer(db, str(uuid.uuid4()))  # an owner with no clients row at all
    await ghost.claim(SPEC)
    assert (await sweep(db, settings, [SPEC])).claims_released == {"sim_work": 1}
    assert (await db.fetch_one(W.work_get, item_id=item))["owner"] is None


async def test_the_sweeper_declares_silent_clients_dead(db, settings):
    cid = await register(db)
    stale = Query(
        "t_stale",
        "UPDATE clients SET heartbeat_at = NOW(6) - INTERVAL 1 HOUR WHERE client_id = %(id)s",
        "test",
    )
    await db.execute(stale, id=cid)
    live = await register(db)
    assert (await sweep(db, settings, [SPEC])).clients_dead == 1
    assert (await db.fetch_one(GET_CLIENT, id=cid))["status"] == "dead"
    assert (await db.fetch_one(GET_CLIENT, id=live))["status"] == "running"


async def test_a_dead_heartbeat_task_stops_the_agent_loudly(db, settings: Settings):
    """If the heartbeat task itself dies (a bug, not a database error), the agent stops with
    exit code 1 and records why."""
    spec = AgentSpec.from_module(sweeper_agent)
    identity = ClientIdentity.fresh("sweeper", "")
    runner = AgentRunner(spec, settings, db, identity, args=argparse.Namespace())

    async def broken(state: object) -> bool:
        raise RuntimeError("heartbeat bug")

    runner.heartbeat_row.heartbeat = broken  # type: ignore[method-assign]
    assert await runner.run() == 1
    row = await db.fetch_one(GET_CLIENT, id=identity.client_id)
    assert row["status"] == "stopped"
    assert "heartbeat task died: RuntimeError: heartbeat bug" in row["last_error"]


async def test_item_progress_is_reported_in_the_clients_row(db, settings: Settings):
    """begin_item / item_done / count show up in the row the operators list."""
    seen: dict[str, object] = {}

    async def run_once(ctx: AgentContext) -> int:
        ctx.begin_item("run 7")
        await ctx._runner.heartbeat_row.heartbeat(ctx._runner.state)
        seen["during"] = await db.fetch_one(
            Query("t_item", "SELECT current_item FROM clients WHERE client_id = %(id)s", "test"),
            id=ctx.client_id,
        )
        ctx.count("bytes_freed", 1234)
        ctx.item_done()
        return 0

    spec = AgentSpec(name="probe", run_once=run_once, background_sweep=False)
    identity = ClientIdentity.fresh("probe", "")
    assert await AgentRunner(spec, settings, db, identity, once=True).run() == 0
    assert seen["during"] == {"current_item": "run 7"}
    rows = await db.fetch_all(Q.list_clients, all=True)
    (row,) = [r for r in rows if r["client_id"] == identity.client_id]
    assert row["items_done"] == 1 and row["counters"] == '{"bytes_freed": 1234}'
    assert row["status"] == "stopped" and row["current_item"] is None


async def test_no_work_is_taken_while_the_heartbeat_cannot_be_written(db, settings: Settings):
    """After heartbeat_grace_s without a written heartbeat, run_once is not called; once the
    heartbeat is written again, work resumes."""
    from shared.core.errors import DbUnavailable

    quick = dataclasses.replace(
        settings, heartbeat_interval_s=0.05, heartbeat_grace_s=0.3, poll_interval_s=0.05
    )
    calls: list[bool] = []
    runner: AgentRunner

    async def run_once(ctx: AgentContext) -> int:
        calls.append(runner.heartbeat_healthy())
        return 0

    spec = AgentSpec(name="probe", run_once=run_once, background_sweep=False)
    runner = AgentRunner(spec, quick, db, ClientIdentity.fresh("probe", ""))
    real_heartbeat = runner.heartbeat_row.heartbeat
    broken = True

    async def heartbeat(state: object) -> bool:
        if broken:
            raise DbUnavailable("database unreachable (test)")
        return await real_heartbeat(state)  # type: ignore[arg-type]

    runner.heartbeat_row.heartbeat = heartbeat  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.heartbeat_lost, timeout_s=10, what="heartbeat_lost")
    taken_when_lost = len(calls)
    broken = False
    await eventually(
        lambda: len(calls) > taken_when_lost and not runner.heartbeat_lost, timeout_s=10, what="work resumed"
    )
    runner.request_stop("test over")
    assert await task == 0
    assert all(calls), "run_once was called while the heartbeat was not being written"


OWNED_BY = Query(
    "t_owned_by", "SELECT item_id FROM sim_work WHERE owner = %(owner)s ORDER BY item_id", "test"
)


async def test_a_claim_whose_commit_reply_is_lost_leaves_no_row_owned_that_nobody_works_on(db, settings):
    """The proxy lets the claim's COMMIT reach the server and drops the reply: the claim
    committed, the client saw a lost connection and retried, taking another row. Only the
    row it holds stays owned by it; the first is pending again for anyone."""
    items = [await db.insert(W.work_add, duration_ms=0) for _ in range(3)]
    async with lossy_proxy(parse_dsn(settings.db_dsn)) as proxy:
        pdb = await Database.connect(settings, proxy.dsn(), pool_size=2)
        try:
            owner = await register(pdb)
            claimer = Claimer(pdb, owner)
            proxy.lose_next_commit_reply()
            (row,) = await claimer.claim(SPEC, limit=1)
            assert proxy.dropped == 1
        finally:
            await pdb.close()
    owned = [r["item_id"] for r in await db.fetch_all(OWNED_BY, owner=owner)]
    assert owned == [row["item_id"]]
    assert claimer.held.items() == [(SPEC, row["item_id"])] and len(claimer.strays) == 0
    assert row["item_id"] != items[0]  # the first attempt's row was taken, then handed back
    pending = await db.fetch_one(W.work_get, item_id=items[0])
    assert pending is not None and pending["owner"] is None


CLAIM_COLUMNS = Query(
    "t_claim_columns",
    """
SELECT table_name AS name FROM information_schema.columns
WHERE table_schema = DATABASE() AND column_name IN ('owner', 'claimed_at')
GROUP BY table_name HAVING COUNT(*) = 2 ORDER BY table_name""",
    "test",
)
REQUIRED_COLUMNS = Query(
    "t_required",
    """
SELECT column_name AS name, data_type AS type, column_type AS full_type
FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = %(table)s AND is_nullable = 'NO'
  AND column_default IS NULL AND extra NOT LIKE '%%auto_increment%%'""",
    "test",
)


def _filler(column: dict[str, str]) -> object:
    """A value any column of this type takes (the first of an enum's values)."""
    if column["type"] == "enum":
        return column["full_type"].split("'")[1]
    if column["type"] in ("datetime", "timestamp", "date"):
        return "2026-01-01 00:00:00"
    if column["type"] in ("varchar", "char", "text", "mediumtext", "longtext", "varbinary", "blob"):
        return "x"
    return 0


async def test_every_table_with_claim_columns_is_claimable_and_swept_by_the_sweeper_alone(
    db, test_dsn, tmp_path
):
    """The database's own catalogue says which tables have owner/claimed_at; each is in
    shared.claimables (sim_work is the workload stand-in's own), and the sweeper agent, which
    imports no other agent, releases a dead client's claim on every one."""
    tables = [r["name"] for r in await db.fetch_all(CLAIM_COLUMNS)]
    assert sorted(s.table for s in CLAIMABLES) == sorted(t for t in tables if t != "sim_work")
    dead = await register(db, "loader")
    await db.execute(MARK_DEAD, id=dead)
    for spec in CLAIMABLES:
        columns = [
            c
            for c in await db.fetch_all(REQUIRED_COLUMNS, table=spec.table)
            if c["name"] not in ("owner", "claimed_at")
        ]
        names = ", ".join(f"`{c['name']}`" for c in columns)  # from the catalogue
        values = ", ".join(f"%({c['name']})s" for c in columns)
        insert = Query(
            "t_insert",
            f"INSERT INTO `{spec.table}` ({names}{', ' if names else ''}"
            f"owner, claimed_at) VALUES ({values}{', ' if values else ''}"
            "%(owner)s, NOW(6))",
            "test",
        )
        await db.transaction(
            lambda tx, q=insert, cs=columns: _insert_unchecked(tx, q, cs, dead), name="t_insert"
        )
    sweeper = AgentProcess("sweeper", test_dsn, tmp_path, "--once")
    assert await sweeper.wait(timeout_s=60) == 0, sweeper.output()
    for spec in CLAIMABLES:
        owned = Query("t_owned", f"SELECT COUNT(*) AS n FROM `{spec.table}` WHERE owner = %(owner)s", "test")
        assert await db.fetch_val(owned, owner=dead) == 0, spec.table
    (released,) = [e for e in sweeper.events("sweep")]
    assert set(released["claims_released"]) == {s.table for s in CLAIMABLES}


async def _insert_unchecked(tx, query: Query, columns: list[dict[str, str]], owner: str) -> None:
    await tx.execute_raw("SET SESSION foreign_key_checks = 0")
    try:
        await tx.execute(query, owner=owner, **{c["name"]: _filler(c) for c in columns})
    finally:
        await tx.execute_raw("SET SESSION foreign_key_checks = 1")
