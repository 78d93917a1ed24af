"""Operators' actions on a loading config's batches and items: removing batches from the
DataStore, purging them, putting failed items back in the queue. ``ippctl psps`` and the
console both call these, so what they do and what they say are the same."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.db.columns import TextLimits
from shared.db.database import Database
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.distribution import datastore
from shared.psps import configs
from shared.psps.configs import ConfigError

BATCH = re.compile(r"^B\d{8}\Z")


@dataclass
class Outcome:
    """What an action did, a line per batch (or one for all), and whether all of it worked."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def batch_range(first: str, last: str | None) -> tuple[str, str]:
    last = last or first
    for name in (first, last):
        if not BATCH.match(name):
            raise ConfigError(f"batch name {name!r} is not valid (B followed by 8 digits, e.g. B00000001)")
    if last < first:
        raise ConfigError(f"batch range {first}..{last} is empty (the last comes before the first)")
    return first, last


async def remove_batches(dbs: Databases, config: str, first: str, last: str | None) -> Outcome:
    """Remove one batch or a range from the config's DataStore product and record
    deleted_datastore (failed, with the reason, where a file's volume is down)."""
    db = dbs.ipptopsps
    cfg = await configs.load(db, config)
    first, last = batch_range(first, last)
    rows = await db.fetch_all(Q.batches_by_name, config=config, first=first, last=last)
    if not rows:
        return Outcome([f"{config}: no batches {first}..{last}"], ok=False)
    out = Outcome()
    limits = await TextLimits.read(db)
    for row in rows:
        if not row["fileset"]:
            out.lines.append(f"{row['name']}: never published on the DataStore")
        else:
            try:
                deleted = await datastore.remove_fileset(
                    dbs.processing, cfg.datastore_product, row["fileset"]
                )
            except datastore.DataStoreError as exc:
                note = limits.fit("psps_batch", "note", str(exc))
                await db.execute(
                    Q.batch_deleted, batch_id=row["batch_id"], target="datastore", state="failed", note=note
                )
                out.lines.append(f"{row['name']}: NOT removed: {exc}")
                out.ok = False
                continue
            gone = "already gone from the DataStore"
            done = f"removed from {cfg.datastore_product}, {deleted} files deleted"
            out.lines.append(f"{row['name']}: {gone if deleted is None else done}")
        await db.execute(
            Q.batch_deleted, batch_id=row["batch_id"], target="datastore", state="succeeded", note=None
        )
    return out


async def purge_batches(db: Database, config: str, first: str, last: str | None) -> Outcome:
    """Mark batches purged: the batch cleaner then removes every copy of them."""
    await configs.load(db, config)
    first, last = batch_range(first, last)
    rows = await db.fetch_all(Q.batches_by_name, config=config, first=first, last=last)
    for row in rows:
        await db.execute(Q.batch_purge, batch_id=row["batch_id"])
    line = (
        f"{config}: {len(rows)} batches marked purged; the batch cleaner removes their DataStore, "
        "DXLayer and local copies"
    )
    return Outcome([line], ok=bool(rows))


async def requeue_failed(db: Database, config: str) -> Outcome:
    """Every failed item of the config back in the queue, its attempts counted afresh."""
    await configs.load(db, config)
    n = await db.execute(Q.psps_items_requeue, config=config)
    return Outcome([f"{config}: {n} failed items queued again"])
