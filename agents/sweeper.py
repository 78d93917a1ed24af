"""Declare silent clients dead, release the claims nobody alive holds, prune old client rows.

Every agent already runs the same sweep on a background task; this agent keeps sweeping when
every other agent on the cluster is paused or stopped, so a dead client's claims are never
stranded.
"""

from __future__ import annotations

from shared.runtime.agent import AgentContext
from shared.runtime.sweeper import sweep

NAME = "sweeper"
#: This agent *is* the sweeper: no second sweep task in the same process.
BACKGROUND_SWEEP = False


async def run_once(ctx: AgentContext) -> int:
    """One sweep pass. Returns 0: a sweep never leaves work pending, so the loop idles."""
    result = await sweep(ctx.db, ctx.settings, ctx.claimables)
    released = sum(result.claims_released.values())
    if result.clients_dead or released or result.clients_pruned:
        ctx.log.info(
            "sweep",
            clients_dead=result.clients_dead,
            claims_released=result.claims_released,
            clients_pruned=result.clients_pruned,
        )
        ctx.count("clients_declared_dead", result.clients_dead)
        ctx.count("claims_released", released)
    return 0
