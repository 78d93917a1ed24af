"""Claim specs of distribution: runs to ship (the server) and sources to poll (a mirror's
client)."""

from __future__ import annotations

from shared.db.queries import Q
from shared.runtime.claims import ClaimSpec

DIST_SPEC = ClaimSpec(
    table="distRun", id_column="id", select=Q.dist_claim, mark=Q.claim_mark_distRun,
    release=Q.claim_release_distRun, release_orphans=Q.claim_release_orphans_distRun)
RC_SPEC = ClaimSpec(
    table="rcDestination", id_column="id", select=Q.rc_claim, mark=Q.claim_mark_rcDestination,
    release=Q.claim_release_rcDestination, release_orphans=Q.claim_release_orphans_rcDestination)
