"""Claiming work rows so that no two clients ever process the same one.

A claimable table has an ``owner`` column (a client id) and a ``claimed_at`` column. Work is
claimed in one short transaction: the spec's ``select`` query picks pending rows with
``FOR UPDATE SKIP LOCKED`` (over an index that matches its ORDER BY), then ``mark`` sets
owner = this client and claimed_at = NOW(6). The row is processed outside any transaction
and finished with a statement that ends ``WHERE <id> = %(id)s AND owner = %(owner)s``, so a
client whose claim was released can never finish twice (:class:`~shared.core.errors.ClaimLost`).

Claims held by this process are tracked so the runtime can hand them back on a drain; claims
of a dead client are released by the sweeper through the spec's ``release_orphans`` query,
for every table the process is told of (:mod:`shared.claimables` lists the IPP's).

A claim transaction whose outcome is unknown (the connection died after COMMIT was sent,
before its reply came) may have committed: its rows would then stay owned by a live client
that is not working on them, and the sweeper would never release them. The transaction is
retried (and takes other rows), so every row an earlier attempt marked and the final one did
not return is handed back with the owner-guarded ``release`` query (a no-op where the
attempt had not committed). A hand-back that fails is kept and tried again before the next
claim and on exit. Claims of one table are taken one at a time per process, so no row of a
concurrent claim can be among them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import ClaimLost, DbError
from shared.core.log import get_logger
from shared.db.database import Database, Row, Tx
from shared.db.queries import Query

log = get_logger("claims")


@dataclass(frozen=True)
class ClaimSpec:
    """The named queries that claim, hand back and sweep one table's rows.

    - ``select``: ``SELECT <id_column> ... LIMIT %(limit)s FOR UPDATE SKIP LOCKED``
    - ``mark``: ``UPDATE ... SET owner = %(owner)s, claimed_at = NOW(6) WHERE <id> IN %(ids)s``
    - ``release``: ``UPDATE ... SET owner = NULL, claimed_at = NULL
      WHERE <id> = %(id)s AND owner = %(owner)s``
    - ``release_orphans``: the same for every row whose owner is not a live client.
    """

    table: str
    id_column: str
    select: Query
    mark: Query
    release: Query
    release_orphans: Query


@dataclass
class HeldClaims:
    """The claims this process holds right now, by table, so a drain can hand them back."""

    held: dict[str, tuple[ClaimSpec, set[Any]]] = field(default_factory=dict)

    def add(self, spec: ClaimSpec, ids: Iterable[Any]) -> None:
        self.held.setdefault(spec.table, (spec, set()))[1].update(ids)

    def discard(self, spec: ClaimSpec, item_id: Any) -> None:
        if spec.table in self.held:
            self.held[spec.table][1].discard(item_id)

    def items(self) -> list[tuple[ClaimSpec, Any]]:
        return [(spec, i) for spec, ids in self.held.values() for i in sorted(ids)]

    def __len__(self) -> int:
        return sum(len(ids) for _, ids in self.held.values())


class Claimer:
    """Claim, finish and hand back rows of claimable tables on behalf of one client."""

    def __init__(self, db: Database, owner: str) -> None:
        self.db = db
        self.owner = owner
        self.held = HeldClaims()
        #: Rows a claim attempt of unknown outcome may have taken, not yet handed back.
        self.strays = HeldClaims()
        self._locks: dict[str, asyncio.Lock] = {}

    async def claim(self, spec: ClaimSpec, limit: int = 1, **params: Any) -> list[Row]:
        """Claim up to ``limit`` pending rows; returns the rows ``select`` returned."""
        marked: list[Any] = []  # every id an attempt marked (an attempt may be retried)

        async def take(tx: Tx) -> list[Row]:
            rows = await tx.fetch_all(spec.select, limit=limit, **params)
            if rows:
                ids = tuple(row[spec.id_column] for row in rows)
                marked.extend(ids)
                await tx.execute(spec.mark, owner=self.owner, ids=ids)
            return rows

        async with self._locks.setdefault(spec.table, asyncio.Lock()):
            await self._hand_back_strays(spec)
            try:
                rows = await self.db.transaction(take, name=f"claim_{spec.table}")
            except BaseException:
                self.strays.add(spec, marked)
                raise
            got = {row[spec.id_column] for row in rows}
            self.held.add(spec, got)
            for item_id in got:
                self.strays.discard(spec, item_id)
            self.strays.add(spec, (i for i in marked if i not in got))
            await self._hand_back_strays(spec)
        return rows

    async def _hand_back_strays(self, spec: ClaimSpec) -> None:
        """Release what attempts of unknown outcome may have claimed (best effort: a failure
        keeps them for the next try)."""
        strays = [i for s, i in self.strays.items() if s.table == spec.table]
        released: list[Any] = []
        for item_id in strays:
            try:
                changed = await self.db.execute(spec.release, id=item_id, owner=self.owner)
            except DbError as exc:
                log.warning(
                    "claim_handback_deferred",
                    table=spec.table,
                    error=str(exc),
                    pending=len(strays) - len(released),
                )
                return
            self.strays.discard(spec, item_id)
            if changed == 1:
                released.append(item_id)
        if released:
            log.warning(
                "claim_outcome_unknown_released",
                table=spec.table,
                ids=released,
                reason="a claim transaction's COMMIT had no reply and was retried",
            )

    async def finish(self, spec: ClaimSpec, query: Query, item_id: Any, **params: Any) -> None:
        """Run the finishing statement for a claimed row; ClaimLost if we no longer own it.

        ``query`` must end with ``WHERE <id> = %(id)s AND owner = %(owner)s`` and clear owner.
        """
        changed = await self.db.execute(query, id=item_id, owner=self.owner, **params)
        self.held.discard(spec, item_id)
        if changed != 1:
            raise ClaimLost(f"{spec.table} {spec.id_column}={item_id} is no longer claimed by {self.owner}")

    async def finish_in(self, tx: Tx, spec: ClaimSpec, query: Query, item_id: Any, **params: Any) -> None:
        """Like :meth:`finish`, inside a caller's transaction (with its other writes)."""
        changed = await tx.execute(query, id=item_id, owner=self.owner, **params)
        if changed != 1:
            raise ClaimLost(f"{spec.table} {spec.id_column}={item_id} is no longer claimed by {self.owner}")
        self.held.discard(spec, item_id)

    async def release(self, spec: ClaimSpec, item_id: Any) -> bool:
        """Hand one row back unprocessed; False if it was not ours any more."""
        changed = await self.db.execute(spec.release, id=item_id, owner=self.owner)
        self.held.discard(spec, item_id)
        return changed == 1

    async def release_all(self) -> int:
        """Hand back every claim this process still holds (on a drain or a crash), and what
        claim attempts of unknown outcome may have taken."""
        released = 0
        for spec, item_id in self.held.items():
            if await self.release(spec, item_id):
                released += 1
        for spec in {s.table: s for s, _ in self.strays.items()}.values():
            await self._hand_back_strays(spec)
        return released
