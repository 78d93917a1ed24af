"""The sweeper: declares silent clients dead and releases the claims nobody alive holds.

Every agent process runs it on a watched background task every ``sweep_interval_s``; the
statements are idempotent, so several sweepers at once do no harm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.core.settings import Settings
from shared.db.database import Database
from shared.db.queries import Q
from shared.runtime.claims import ClaimSpec


@dataclass(frozen=True)
class SweepResult:
    clients_dead: int
    claims_released: dict[str, int]
    clients_pruned: int


async def sweep(db: Database, settings: Settings, claimables: Sequence[ClaimSpec]) -> SweepResult:
    """One pass: stale heartbeats -> dead; orphaned claims on ``claimables`` -> released; old
    client rows pruned."""
    dead = await db.execute(Q.mark_stale_clients_dead, stale_us=int(settings.client_stale_s * 1e6))
    released = {}
    for spec in claimables:
        released[spec.table] = await db.execute(spec.release_orphans)
    pruned = await db.execute(Q.prune_ended_clients, retention_s=int(settings.client_retention_days * 86400))
    return SweepResult(dead, {k: v for k, v in released.items() if v}, pruned)
