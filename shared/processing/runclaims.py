"""Claim specs of the processing-run tables.

The cleanup and update agents claim runs of the same five tables (chipRun, camRun, warpRun,
diffRun, stackRun) through the owner/claimed_at columns of migration 0003. Both agents' specs
share each table's release queries, so :mod:`shared.claimables` lists the cleanup specs for
the sweeper and that covers the update claims too.
"""

from __future__ import annotations

from shared.db.queries import Q
from shared.processing.stages import stage
from shared.runtime.claims import ClaimSpec

LIFECYCLE_STAGES = ("chip", "camera", "warp", "diff", "stack")


def run_spec(stage_name: str, purpose: str) -> ClaimSpec:
    """The spec that claims a stage's runs for ``purpose`` (``cleanup``: runs waiting for
    cleanup, one label at a time; ``update``: runs in update, not waiting, not failed). Both
    share the run table's mark and release queries."""
    st = stage(stage_name)
    return ClaimSpec(
        table=st.run_table, id_column="id",
        select=getattr(Q, f"{purpose}_claim_{stage_name}"),
        mark=getattr(Q, f"claim_mark_{st.run_table}"),
        release=getattr(Q, f"claim_release_{st.run_table}"),
        release_orphans=getattr(Q, f"claim_release_orphans_{st.run_table}"),
    )


CLEANUP_SPECS = {name: run_spec(name, "cleanup") for name in LIFECYCLE_STAGES}
UPDATE_SPECS = {name: run_spec(name, "update") for name in LIFECYCLE_STAGES}
