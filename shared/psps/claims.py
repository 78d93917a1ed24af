"""Claim specs of the PSPS loading tables: the loaders take a sky stripe, then its items."""

from __future__ import annotations

from dataclasses import dataclass

from shared.db.database import Row
from shared.db.queries import Q
from shared.runtime.claims import ClaimSpec

STRIPE_SPEC = ClaimSpec(
    table="psps_stripe",
    id_column="id",
    select=Q.psps_stripe_claim,
    mark=Q.claim_mark_psps_stripe,
    release=Q.claim_release_psps_stripe,
    release_orphans=Q.claim_release_orphans_psps_stripe,
)
ITEM_SPEC = ClaimSpec(
    table="psps_item",
    id_column="id",
    select=Q.psps_item_claim,
    mark=Q.claim_mark_psps_item,
    release=Q.claim_release_psps_item,
    release_orphans=Q.claim_release_orphans_psps_item,
)

#: Test mode: the config's first queued exposure (the same table, so the same sweeps).
FIRST_P2_SPEC = ClaimSpec(
    table="psps_item",
    id_column="id",
    select=Q.psps_item_claim_first,
    mark=Q.claim_mark_psps_item,
    release=Q.claim_release_psps_item,
    release_orphans=Q.claim_release_orphans_psps_item,
)


@dataclass(frozen=True)
class PspsItem:
    """A claimed item (``psps_item_claim``): one P2/ST/OB batch to build."""

    id: int
    config: str
    type: str
    item_id: int
    box: int
    attempts: int
    #: The batch an earlier attempt began (and died building), if any.
    batch_id: int | None

    @classmethod
    def from_row(cls, row: Row) -> PspsItem:
        return cls(
            int(row["id"]),
            str(row["config"]),
            str(row["type"]),
            int(row["item_id"]),
            int(row["box"]),
            int(row["attempts"]),
            None if row["batch_id"] is None else int(row["batch_id"]),
        )


@dataclass(frozen=True)
class PolledBatch:
    """A published batch the ODM poller asks about (``odm_poll_batches``)."""

    batch_id: int
    name: str
    config: str
    type: str
    item_id: int
    loaded_to_odm: str
    merge_worthy: str
    merged: str
    #: Seconds since it was published on the DataStore.
    published_s: float | None

    @classmethod
    def from_row(cls, row: Row) -> PolledBatch:
        return cls(
            int(row["batch_id"]),
            str(row["name"]),
            str(row["config"]),
            str(row["type"]),
            int(row["item_id"]),
            str(row["loaded_to_odm"]),
            str(row["merge_worthy"]),
            str(row["merged"]),
            None if row["published_s"] is None else float(row["published_s"]),
        )

    def stage(self, name: str) -> str:
        """The state of one life-cycle stage the ODM reports (loaded_to_odm, merge_worthy,
        merged)."""
        return {
            "loaded_to_odm": self.loaded_to_odm,
            "merge_worthy": self.merge_worthy,
            "merged": self.merged,
        }[name]
