"""Fault campaign for the runtime: agents SIGKILLed at random moments on a shared queue.

Afterwards every item is done, and done exactly once (the finish is guarded by the owner,
and the sweeper releases a dead client's claim). The short campaign runs in the default
suite; the long one is marked ``soak`` (``make test-soak``).
"""

from __future__ import annotations

import functools
import random
import signal

import pytest

from shared.db.database import Database
from sim.workload import W
from tests.helpers import AgentProcess, eventually


async def done_count(db: Database) -> int:
    return sum(int(r["n"]) for r in await db.fetch_all(W.work_counts) if r["state"] == "done")


async def campaign(db: Database, spawn, *, agents: int, items: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(items):
        await db.insert(W.work_add, duration_ms=rng.randint(20, 120))
    live: list[AgentProcess] = [spawn("workload") for _ in range(agents)]
    started = list(live)
    killed = 0
    for _ in range(kills):
        before = await done_count(db)
        # Kill only once work is visibly flowing, so victims are usually mid-item.
        await eventually(
            functools.partial(_more_done, db, before, 3), timeout_s=60, what="progress before the next kill"
        )
        if await done_count(db) >= items:
            break
        victim = live.pop(rng.randrange(len(live)))
        victim.kill()
        killed += 1
        live.append(spawn("workload"))
        started.append(live[-1])
    await eventually(
        lambda: _more_done(db, items - 1, 1), timeout_s=120 + 5 * kills, what=f"all {items} items done"
    )
    for agent in live:
        agent.send(signal.SIGTERM)
    for agent in live:
        assert await agent.wait() == 0, agent.output()
    assert await db.fetch_all(W.work_log_duplicates) == []
    assert await db.fetch_val(W.work_log_count) == items
    assert {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)} == {"done": items}
    assert killed > 0
    # Evidence that victims died holding claims, which the sweepers then released.
    released = sum(
        sum(e["claims_released"].values())
        for a in started
        for e in a.events("sweep")
        if e.get("claims_released")
    )
    assert released > 0


async def _more_done(db: Database, than: int, by: int) -> bool:
    return await done_count(db) >= than + by


async def test_short_fault_campaign_nothing_lost_or_done_twice(db, spawn):
    await campaign(db, spawn, agents=3, items=150, kills=6, seed=2)


@pytest.mark.soak
async def test_soak_fault_campaign_nothing_lost_or_done_twice(db, spawn):
    await campaign(db, spawn, agents=6, items=2000, kills=40, seed=7)
