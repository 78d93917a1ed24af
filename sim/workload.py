"""A synthetic workload agent: claims ``sim_work`` rows and 'processes' each one.

It exists to exercise the runtime the way a real agent does (claim with SKIP LOCKED, work
outside any transaction, finish only while still the owner) in the tests and the claims
benchmark. Processing an item waits its ``duration_ms`` and then, in one transaction, logs
the item in ``sim_work_log`` and marks it done, so "done exactly once" can be checked by
counting log rows. Run it with ``IPP_EXTRA_AGENTS=workload=sim.workload``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from shared.core.errors import ClaimLost
from shared.db.database import Database, Tx
from shared.db.queries import QueryBook, load_queries
from shared.db.schema import Migration, apply_statements
from shared.runtime.agent import AgentContext
from shared.runtime.claims import ClaimSpec

NAME = "workload"
SQL_DIR = Path(__file__).resolve().parent / "sql"
W = QueryBook(load_queries(SQL_DIR))

SPEC = ClaimSpec(
    table="sim_work",
    id_column="item_id",
    select=W.work_claim_select,
    mark=W.work_claim_mark,
    release=W.work_release,
    release_orphans=W.work_release_orphans,
    nearby=W.work_claim_nearby,
    lock=W.work_claim_lock,
)
#: Not an IPP table, so not in shared.claimables: the runtime sweeps it for this agent.
CLAIMABLES = (SPEC,)


async def create_tables(db: Database) -> None:
    """Create the workload tables in the database (idempotent)."""
    schema = Migration(0, "workload", SQL_DIR / "workload_schema.sql")
    await apply_statements(db, schema.statements(), name="workload")


async def run_once(ctx: AgentContext) -> int:
    """Process items one at a time until none is pending or the runtime says stop."""
    handled = 0
    while ctx.keep_going():
        rows = await ctx.claimer.claim(SPEC, limit=1)
        if not rows:
            break
        item_id, duration_ms = rows[0]["item_id"], rows[0]["duration_ms"]
        ctx.begin_item(f"sim_work {item_id}")
        await asyncio.sleep(duration_ms / 1000)  # the "work"

        async def finish(tx: Tx, item_id: int = item_id) -> None:
            await tx.insert(W.work_log_insert, item_id=item_id, client_id=ctx.client_id)
            await ctx.claimer.finish_in(tx, SPEC, W.work_finish, item_id)

        try:
            await ctx.db.transaction(finish, name="workload_finish")
        except ClaimLost as exc:
            ctx.log.warning("item_claim_lost", item_id=item_id, error=str(exc))
            ctx.item_failed(str(exc))
            continue
        ctx.item_done()
        handled += 1
    return handled
