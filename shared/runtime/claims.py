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

On a Galera cluster ``SKIP LOCKED`` sees only the locks of its own node: claimers on two
nodes pick the same first row, and one loses certification (or is aborted by the other's
replicated write) and retries. A spec with a ``nearby`` pair claims, on a cluster of N nodes,
among the rows whose ``CRC32(id) MOD N`` is this connection's node index first: ``nearby``
reads a few of them without locking anything (a locking scan would lock the other nodes' rows
it passes, and their replicated claims abort it), ``lock`` locks the first still free by id;
when none is, the spec's ``select`` takes anyone's rows (stealing; the only path on a single
server, and a current read, so a stale candidate list never hides work). The extra read costs
a third more per claim, so a claimer uses it only after claims of that table met a conflict
(for the next NEARBY_AFTER_CONFLICT claims): claimers that all share one node never do. A preference, not a
guarantee: behind a proxy or while the membership changes a claimer may guess its node wrong
and meets the others' conflicts as before; no row is claimed twice either way. (CRC32 of the
id, not the id: Galera hands out auto-increment ids in steps of the cluster size, so every
row inserted through one node has the same id MOD N.)

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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import ClaimLost, DbError
from shared.core.log import get_logger
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q, Query

log = get_logger("claims")


@dataclass(frozen=True)
class ClaimSpec:
    """The named queries that claim, hand back and sweep one table's rows.

    - ``select``: ``SELECT <id_column> ... LIMIT %(limit)s FOR UPDATE SKIP LOCKED``
    - ``mark``: ``UPDATE ... SET owner = %(owner)s, claimed_at = NOW(6) WHERE <id> IN %(ids)s``
    - ``release``: ``UPDATE ... SET owner = NULL, claimed_at = NULL
      WHERE <id> = %(id)s AND owner = %(owner)s``
    - ``release_orphans``: the same for every row whose owner is not a live client.

    Node affinity on Galera, both or neither (the select's parameters too):

    - ``nearby``: ``SELECT <id> ... AND CRC32(<id>) MOD %(nodes)s = %(node)s ...
      LIMIT %(candidates)s``, no locking clause
    - ``lock``: the select's columns ``WHERE <id> IN %(ids)s AND`` <still claimable>
      ``LIMIT %(limit)s FOR UPDATE SKIP LOCKED``
    """

    table: str
    id_column: str
    select: Query
    mark: Query
    release: Query
    release_orphans: Query
    nearby: Query | None = None
    lock: Query | None = None


@dataclass(frozen=True)
class NodePosition:
    """This connection's member index in a Galera cluster and the cluster's size; (0, 1) on a
    single server, where affinity changes nothing."""

    node: int = 0
    nodes: int = 1

    @classmethod
    def from_status(cls, rows: list[Row]) -> NodePosition:
        status = {str(r["Variable_name"]).lower(): str(r["Value"]) for r in rows}
        try:
            node, nodes = int(status["wsrep_local_index"]), int(status["wsrep_cluster_size"])
        except (KeyError, ValueError):
            return cls()
        if status.get("wsrep_ready", "").upper() != "ON" or not 0 <= node < nodes:
            return cls()  # not a synced member (its index reads 2^64-1 while it is not one)
        return cls(node, nodes)


#: Rows of this node a claim reads (per row it wants) before locking the first still free.
CANDIDATES_PER_ROW = 8
#: Claims of a table made with node affinity after one of them met a conflict.
NEARBY_AFTER_CONFLICT = 200
#: How long a claimer trusts the node position it read (a membership change renumbers the
#: nodes; until it is read again, claims meet a few more conflicts).
POSITION_REFRESH_S = 30.0


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

    def __init__(self, db: Database, owner: str, position: NodePosition | None = None) -> None:
        """``position`` fixes the node position instead of reading it from the server."""
        self.db = db
        self.owner = owner
        self._fixed = position
        self.held = HeldClaims()
        #: Rows a claim attempt of unknown outcome may have taken, not yet handed back.
        self.strays = HeldClaims()
        self._locks: dict[str, asyncio.Lock] = {}
        self._position: tuple[float, NodePosition] | None = None
        #: Claims per table still to be made with node affinity (after a conflict).
        self._nearby_left: dict[str, int] = {}

    async def position(self) -> NodePosition:
        """The node this claimer's database connections reach, read again every
        POSITION_REFRESH_S; (0, 1) when it cannot be read."""
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if self._position is None or now - self._position[0] > POSITION_REFRESH_S:
            try:
                position = NodePosition.from_status(await self.db.fetch_all(Q.claim_node_position))
            except DbError as exc:
                log.warning("claim_position_unknown", error=str(exc), action="claims without node affinity")
                position = NodePosition()
            self._position = (now, position)
        return self._position[1]

    async def claim(self, spec: ClaimSpec, limit: int = 1, **params: Any) -> list[Row]:
        """Claim up to ``limit`` pending rows; returns the rows ``select`` returned. On a
        cluster a spec with node affinity takes this node's rows first."""
        marked: list[Any] = []  # every id an attempt marked (an attempt may be retried)
        here = await self._affinity(spec)
        conflicts = self.db.stats.conflicts

        async def take(tx: Tx) -> list[Row]:
            rows = await self._take_nearby(tx, spec, here, limit, params) if here.nodes > 1 else []
            if not rows:
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
            if spec.nearby is not None and self.db.stats.conflicts > conflicts:
                self._nearby_left[spec.table] = NEARBY_AFTER_CONFLICT
            got = {row[spec.id_column] for row in rows}
            self.held.add(spec, got)
            for item_id in got:
                self.strays.discard(spec, item_id)
            self.strays.add(spec, (i for i in marked if i not in got))
            await self._hand_back_strays(spec)
        return rows

    def claims_near_left(self, table: str) -> int | None:
        """How many more claims of ``table`` take this node's rows first; None if none ever
        met a conflict."""
        return self._nearby_left.get(table)

    async def _affinity(self, spec: ClaimSpec) -> NodePosition:
        """Where to claim near: this node while claims of the table meet conflicts (or the
        position is fixed), else (0, 1), the plain claim."""
        if spec.nearby is None:
            return NodePosition()
        if self._fixed is not None:
            return self._fixed
        left = self._nearby_left.get(spec.table, 0)
        if left <= 0:
            return NodePosition()
        self._nearby_left[spec.table] = left - 1
        return await self.position()

    async def _take_nearby(
        self, tx: Tx, spec: ClaimSpec, here: NodePosition, limit: int, params: dict[str, Any]
    ) -> list[Row]:
        """Up to ``limit`` free rows of this node's share, locked; [] when none is left."""
        if spec.nearby is None or spec.lock is None:
            return []
        near = {"node": here.node, "nodes": here.nodes, "candidates": CANDIDATES_PER_ROW * limit}
        ids = tuple(r[spec.id_column] for r in await tx.fetch_all(spec.nearby, **near, **params))
        if not ids:
            return []
        return await tx.fetch_all(spec.lock, ids=ids, limit=limit, **params)

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
