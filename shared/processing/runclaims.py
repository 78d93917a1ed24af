"""Claim specs of the processing-run tables.

The cleanup and update agents claim runs of the same five tables (chipRun, camRun, warpRun,
diffRun, stackRun) through the owner/claimed_at columns of migration 0003. Both agents' specs
share each table's release queries, so :mod:`shared.claimables` lists the cleanup specs for
the sweeper and that covers the update claims too.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.db.database import Row
from shared.processing.stages import LIFECYCLE_STAGES, stage, stage_query, table_query
from shared.runtime.claims import ClaimSpec


def run_spec(stage_name: str, purpose: str) -> ClaimSpec:
    """The spec that claims a stage's runs for ``purpose`` (``cleanup``: runs waiting for
    cleanup, one label at a time; ``update``: runs in update, not waiting, not failed). Both
    share the run table's mark and release queries."""
    st = stage(stage_name)
    return ClaimSpec(
        table=st.run_table,
        id_column="id",
        select=stage_query(f"{purpose}_claim", stage_name),
        mark=table_query("claim_mark", st.run_table),
        release=table_query("claim_release", st.run_table),
        release_orphans=table_query("claim_release_orphans", st.run_table),
        # node affinity on Galera for cleanup; the update claim walks ids with a cursor
        # (id > after) that taking only this node's rows would carry past the others'
        nearby=stage_query("cleanup_claim_nearby", stage_name) if purpose == "cleanup" else None,
        lock=stage_query("cleanup_claim_lock", stage_name) if purpose == "cleanup" else None,
    )


CLEANUP_SPECS = {name: run_spec(name, "cleanup") for name in LIFECYCLE_STAGES}
UPDATE_SPECS = {name: run_spec(name, "update") for name in LIFECYCLE_STAGES}


@dataclass(frozen=True)
class ClaimedRun:
    """A run the cleanup or update agent claimed (``cleanup_claim_<stage>``,
    ``update_claim_<stage>``: the same columns for every stage), or read for a dry run."""

    id: int
    state: str
    label: str | None
    workdir: str | None
    #: Negative once destreaked pixels were removed (stack runs: always 0).
    magicked: int
    note: str | None

    @classmethod
    def from_row(cls, row: Row) -> ClaimedRun:
        return cls(
            int(row["id"]),
            str(row["state"]),
            row["label"],
            row["workdir"],
            int(row["magicked"] or 0),
            row.get("note"),
        )
