"""Claim specs of distribution: runs to ship (the server) and sources to poll (a mirror's
client)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.db.database import Row
from shared.db.queries import Q
from shared.runtime.claims import ClaimSpec

DIST_SPEC = ClaimSpec(
    table="distRun",
    id_column="id",
    select=Q.dist_claim,
    mark=Q.claim_mark_distRun,
    release=Q.claim_release_distRun,
    release_orphans=Q.claim_release_orphans_distRun,
)
RC_SPEC = ClaimSpec(
    table="rcDestination",
    id_column="id",
    select=Q.rc_claim,
    mark=Q.claim_mark_rcDestination,
    release=Q.claim_release_rcDestination,
    release_orphans=Q.claim_release_orphans_rcDestination,
)


@dataclass(frozen=True)
class DistRun:
    """A claimed distRun (``dist_claim``): one run to ship as a fileset of a product."""

    id: int
    stage: str
    stage_id: int
    label: str | None
    #: Ship what cleanup keeps (the run is cleaned) rather than every file.
    clean: bool
    product: str
    target_id: int | None

    @classmethod
    def from_row(cls, row: Row) -> DistRun:
        return cls(
            int(row["id"]),
            str(row["stage"]),
            int(row["stage_id"]),
            row["label"],
            bool(row["clean"]),
            str(row["product"]),
            None if row["target_id"] is None else int(row["target_id"]),
        )
