"""Every claimable table of the IPP, named here and nowhere else.

The sweeper releases the claims of dead clients table by table; it must know every table,
whatever the process that runs it imported (the sweeper agent imports no other agent). A
table with ``owner``/``claimed_at`` columns that is missing here would keep a dead client's
claims forever: the test suite checks this list against the database's own catalogue.
One spec per table: the cleanup and update specs of a run table share its release queries.
"""

from __future__ import annotations

from collections.abc import Set

from shared.db.schema import IPPTOPSPS, PROCESSING
from shared.distribution.claims import DIST_SPEC, RC_SPEC
from shared.processing.runclaims import CLEANUP_SPECS
from shared.psps.claims import ITEM_SPEC, STRIPE_SPEC
from shared.runtime.claims import ClaimSpec

#: By the database role whose tables they are (shared.db.schema).
BY_ROLE: dict[str, tuple[ClaimSpec, ...]] = {
    PROCESSING: (
        *CLEANUP_SPECS.values(),  # chipRun, camRun, warpRun, diffRun, stackRun
        DIST_SPEC,  # distRun: runs dist_server ships
        RC_SPEC,  # rcDestination: sources a mirror's dist_client polls
    ),
    IPPTOPSPS: (
        STRIPE_SPEC,  # psps_stripe: sky stripes a loader works
        ITEM_SPEC,  # psps_item: P2/ST/OB items a loader builds
    ),
}

CLAIMABLES: tuple[ClaimSpec, ...] = (*BY_ROLE[PROCESSING], *BY_ROLE[IPPTOPSPS])


def claimables_of(roles: Set[str]) -> tuple[ClaimSpec, ...]:
    """The claimable tables of a database that holds ``roles``."""
    return tuple(spec for role in (PROCESSING, IPPTOPSPS) if role in roles for spec in BY_ROLE[role])
