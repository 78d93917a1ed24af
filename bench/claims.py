"""Claims per second with 8 concurrent claimers: the runtime's claim helper against a bare
aiomysql SKIP LOCKED loop doing the same statements on the same table, in the same run.

Each claimer claims one row (SELECT ... FOR UPDATE SKIP LOCKED + mark owner, one
transaction) and finishes it (UPDATE ... WHERE id AND owner), until no row is left. Rounds
alternate between the two so drift on a shared machine hits both alike; the median of the
rounds is reported. Duplicates are counted from what each claimer got.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import aiomysql
import pymysql

from bench.common import Figure, bench_database
from shared.core.settings import Settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.runtime.claims import Claimer
from sim.workload import SPEC, W

CLAIMERS = 8
RESET = Query("b_reset", "UPDATE sim_work SET state = 'pending', owner = NULL, claimed_at = NULL", "bench")


async def helper_round(settings: Settings, items: int) -> tuple[float, list[int]]:
    """8 clients of the runtime's Claimer, each on its own one-connection pool."""
    pools = [await Database.connect(settings, pool_size=1) for _ in range(CLAIMERS)]
    got: list[int] = []

    async def claimer(db: Database) -> None:
        claims = Claimer(db, str(uuid.uuid4()))
        while rows := await claims.claim(SPEC, limit=1):
            item = rows[0]["item_id"]
            got.append(item)
            await claims.finish(SPEC, W.work_finish, item)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(claimer(db) for db in pools))
        elapsed = time.perf_counter() - started
    finally:
        for db in pools:
            await db.close()
    return elapsed, got


async def bare_round(settings: Settings, items: int) -> tuple[float, list[int]]:
    """8 bare aiomysql connections running the same SQL text by hand."""
    kwargs = parse_dsn(settings.effective_dsn()).connect_kwargs()
    conns = [await aiomysql.connect(autocommit=True, **kwargs) for _ in range(CLAIMERS)]
    got: list[int] = []

    async def claimer(conn: aiomysql.Connection) -> None:
        owner = str(uuid.uuid4())
        async with conn.cursor() as cur:
            while True:
                try:
                    await conn.begin()
                    await cur.execute(W.work_claim_select.sql, {"limit": 1})
                    row = await cur.fetchone()
                    if row is None:
                        await conn.commit()
                        return
                    await cur.execute(W.work_claim_mark.sql, {"owner": owner, "ids": (row[0],)})
                    await conn.commit()
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] not in (1205, 1213):  # deadlock / lock wait: try again
                        raise
                    await conn.rollback()
                    continue
                got.append(row[0])
                while True:
                    try:
                        await cur.execute(W.work_finish.sql, {"id": row[0], "owner": owner})
                        break
                    except pymysql.err.OperationalError as exc:
                        if exc.args[0] not in (1205, 1213):
                            raise

    try:
        started = time.perf_counter()
        await asyncio.gather(*(claimer(c) for c in conns))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            c.close()
    return elapsed, got


async def measure(items: int = 3000, rounds: int = 5) -> Figure:
    async with bench_database("ipp_bench_claims") as (settings, db):
        for _ in range(items):
            await db.insert(W.work_add, duration_ms=0)
        rates: dict[str, list[float]] = {"helper": [], "bare": []}
        duplicates = 0
        runners: dict[str, Callable[[Settings, int], Awaitable[tuple[float, list[int]]]]] = {
            "helper": helper_round,
            "bare": bare_round,
        }
        for i in range(rounds):
            for name in ("helper", "bare") if i % 2 == 0 else ("bare", "helper"):
                await db.execute(RESET)
                elapsed, got = await runners[name](settings, items)
                if len(got) != items:
                    raise RuntimeError(f"{name}: claimed {len(got)} of {items} rows")
                duplicates += sum(1 for n in Counter(got).values() if n > 1)
                rates[name].append(items / elapsed)
        ours, anchor = statistics.median(rates["helper"]), statistics.median(rates["bare"])
        ok = ours >= 0.7 * anchor and duplicates == 0
        return Figure(
            name=f"claims/s, {CLAIMERS} concurrent claimers",
            ours=ours,
            anchor=anchor,
            unit="claims/s",
            anchor_name="bare aiomysql SKIP LOCKED loop",
            target=">= 0.7x anchor, 0 duplicates",
            ok=ok,
            note=(
                f"{items} rows x {rounds} rounds each (median); duplicates: {duplicates}; "
                f"helper rounds {', '.join(f'{r:.0f}' for r in rates['helper'])}; "
                f"bare rounds {', '.join(f'{r:.0f}' for r in rates['bare'])}"
            ),
        )


if __name__ == "__main__":
    print(asyncio.run(measure()))
