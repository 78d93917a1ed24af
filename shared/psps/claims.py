"""Claim specs of the PSPS loading tables: the loaders take a sky stripe, then its items."""

from __future__ import annotations

from shared.db.queries import Q
from shared.runtime.claims import ClaimSpec

STRIPE_SPEC = ClaimSpec(
    table="psps_stripe", id_column="id", select=Q.psps_stripe_claim,
    mark=Q.claim_mark_psps_stripe, release=Q.claim_release_psps_stripe,
    release_orphans=Q.claim_release_orphans_psps_stripe)
ITEM_SPEC = ClaimSpec(
    table="psps_item", id_column="id", select=Q.psps_item_claim, mark=Q.claim_mark_psps_item,
    release=Q.claim_release_psps_item, release_orphans=Q.claim_release_orphans_psps_item)
