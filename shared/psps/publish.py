"""Recording and publishing a built batch: the FITS file and manifest go into storage
(:func:`stage`) and then (:func:`commit`, with the caller's own writes) become a fileset of
the config's DataStore product while the batch row is marked processed and
loaded_to_datastore.

With one database that is one transaction: nothing is visible before it commits. When the
ippToPsps database is separate (``ipptopsps_dsn``) no transaction spans both, so the steps
are ordered to be resumable: the batch row is recorded first with its fileset name and
loaded_to_datastore pending, then the fileset is registered on the DataStore, then the batch
is marked loaded with the caller's writes. A loader that dies between the last two leaves a
registered fileset that :func:`resume` adopts on the item's next attempt, so a batch the
DXLayer may already have taken is never built again under another number."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.core.errors import DbIntegrityError, IppError
from shared.db.columns import TextLimits
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.distribution import datastore
from shared.distribution.bundles import file_digest
from shared.psps.batches import Written, batch_name
from shared.psps.configs import LoadingConfig
from shared.storage.store import Storage


async def new_batch(db: Database | Tx, config: str, batch_type: str, item_id: int) -> tuple[int, str]:
    """Reserve a batch id and its name ``B%08d``."""
    batch_id = await db.insert(Q.psps_batch_new, config=config, type=batch_type, item_id=item_id)
    name = batch_name(batch_id)
    await db.execute(Q.psps_batch_name, batch_id=batch_id, name=name)
    return batch_id, name


async def _product(db: Database, cfg: LoadingConfig) -> Any:
    try:
        return await datastore.product(db, cfg.datastore_product)
    except datastore.NotFound:
        # another loader may create it at the same moment: either way it exists after
        with contextlib.suppress(datastore.DataStoreError, DbIntegrityError):
            await datastore.add_product(
                db,
                cfg.datastore_product,
                "IPP-PSPS",
                f"PSPS batches of loading config {cfg.name}",
                ["batch", "type", "config"],
            )
        return await datastore.product(db, cfg.datastore_product)


@dataclass(frozen=True)
class Publication:
    """A built batch whose files are in storage, waiting for its record step: the fileset
    registered and the batch row marked published, in the caller's transaction (with the
    caller's own writes, such as finishing its item). Until then nothing is visible."""

    storage: Storage
    cfg: LoadingConfig
    batch_id: int
    name: str
    batch_type: str
    written: Written
    detections: int
    prod: Row | None
    files: list[datastore.NewFile]
    #: Repeated rows the builder discarded (recorded on the batch).
    duplicates: int = 0

    @property
    def fileset(self) -> str | None:
        return self.name if self.prod is not None else None

    @property
    def stored(self) -> str:
        return f"datastore/{self.cfg.datastore_product}/{self.name}/"

    async def record(self, tx: Tx) -> None:
        """Register the fileset and mark the batch row published (one database)."""
        await self.register(tx)
        await self.record_batch(tx, "succeeded" if self.fileset else "pending")

    async def register(self, tx: Tx) -> None:
        """Register the batch's fileset on the DataStore (if the config publishes)."""
        if self.prod is not None:
            await datastore.register_fileset(
                tx,
                self.prod,
                self.name,
                self.cfg.datastore_type,
                [self.name, self.batch_type, self.cfg.name],
                self.files,
            )

    async def record_batch(self, db: Database | Tx, loaded: str) -> None:
        """Mark the batch row processed, with its counts, files and fileset name."""
        await db.execute(
            Q.psps_batch_published,
            batch_id=self.batch_id,
            detections=self.detections,
            duplicates=self.duplicates,
            fits_path=str(self.written.fits_path),
            fileset=self.fileset,
            loaded=loaded,
        )

    async def abandon(self) -> None:
        """The record step did not commit: the stored copies go again."""
        if self.prod is not None:
            await self.storage.delete_under(self.stored)


Finish = Callable[[Tx], Awaitable[None]]


async def _nothing(tx: Tx) -> None:
    return None


async def commit(dbs: Databases, pub: Publication, finish: Finish = _nothing) -> None:
    """Make a staged batch published, with ``finish`` (the caller's writes in the ippToPsps
    database, such as its item done) in the last transaction; on a failure before the fileset
    is registered, the stored copies go again."""
    if not dbs.separate or pub.prod is None:

        async def at_once(tx: Tx) -> None:
            await pub.record(tx)
            await finish(tx)

        try:
            await dbs.ipptopsps.transaction(at_once, name="psps_publish")
        except BaseException:
            await pub.abandon()
            raise
        return
    try:
        await pub.record_batch(dbs.ipptopsps, "pending")
        await dbs.processing.transaction(pub.register, name="psps_register")
    except BaseException:
        await pub.abandon()
        raise
    await _confirm(dbs, pub.batch_id, finish)


async def _confirm(dbs: Databases, batch_id: int, finish: Finish) -> None:
    async def loaded(tx: Tx) -> None:
        await tx.execute(Q.psps_batch_loaded, batch_id=batch_id)
        await finish(tx)

    await dbs.ipptopsps.transaction(loaded, name="psps_publish")


async def resume(dbs: Databases, cfg: LoadingConfig, batch_id: int, finish: Finish) -> str | None:
    """An earlier attempt's batch: if its fileset is on the DataStore but the batch row never
    said so (its loader died between the two), complete it with ``finish`` and return its
    name; otherwise record it abandoned, its stored copies deleted, and return None."""
    row = await dbs.ipptopsps.fetch_one(Q.psps_batch_get, batch_id=batch_id)
    if row is None:
        return None
    if row["processed"] == "succeeded" and row["loaded_to_datastore"] == "pending" and row["fileset"]:
        try:
            prod = await datastore.product(dbs.processing, cfg.datastore_product)
        except datastore.NotFound:
            prod = None
        if prod is not None and await datastore.fileset_row(dbs.processing, prod["prod_id"], row["fileset"]):
            await _confirm(dbs, batch_id, finish)
            return str(row["name"])
        await dbs.ipptopsps.execute(
            Q.psps_batch_failed, batch_id=batch_id, note="abandoned: its loader stopped before registering it"
        )
        await Storage(dbs.processing).delete_under(f"datastore/{cfg.datastore_product}/{row['name']}/")
        return None
    await dbs.ipptopsps.execute(
        Q.psps_batch_abandon, batch_id=batch_id, note="abandoned: its loader stopped before publishing"
    )
    return None


async def stage(
    db: Database,
    cfg: LoadingConfig,
    batch_id: int,
    name: str,
    batch_type: str,
    written: Written,
    detections: int,
    duplicates: int = 0,
) -> Publication:
    """Store the batch's files (unless the config does not publish) for :meth:`record`."""
    storage = Storage(db)
    files: list[datastore.NewFile] = []
    prod = None
    if cfg.datastore_publish:
        prod = await _product(db, cfg)
        prefix = f"neb://any/datastore/{cfg.datastore_product}/{name}"
        manifest = written.manifest_path
        m_size, m_md5 = await asyncio.to_thread(file_digest, manifest)
        files = [
            datastore.NewFile(
                written.fits_path.name,
                written.bytes,
                written.md5sum,
                "fits",
                f"{prefix}/{written.fits_path.name}",
            ),
            # a text file whose component says what it is, as the IPP's dbinfo and dirinfo are
            datastore.NewFile(manifest.name, m_size, m_md5, "text", f"{prefix}/{manifest.name}", "manifest"),
        ]
    pub = Publication(storage, cfg, batch_id, name, batch_type, written, detections, prod, files, duplicates)
    if prod is not None:
        await storage.delete_under(pub.stored)
        for f, path in zip(files, (written.fits_path, written.manifest_path), strict=True):
            await storage.create_from_file(f.uri, path)  # a copy: the local one stays
    return pub


async def publish(
    dbs: Databases,
    cfg: LoadingConfig,
    batch_id: int,
    name: str,
    batch_type: str,
    written: Written,
    detections: int,
) -> str | None:
    """Stage and record a batch in one go (the IN batch); returns the fileset name."""
    pub = await stage(dbs.processing, cfg, batch_id, name, batch_type, written, detections)
    await commit(dbs, pub)
    return pub.fileset


@dataclass(frozen=True)
class InBatch:
    """A config's IN batch: its name, FITS file and fileset (None if not published)."""

    name: str
    fits_path: str | None
    fileset: str | None
    #: True when it had been made before (nothing was done this time).
    already: bool

    def describe(self, cfg: LoadingConfig) -> str:
        """What ``ippctl psps init`` says (and the console shows)."""
        if self.already:
            return f"{cfg.name}: the IN batch {self.name} is published already"
        published = f", published as {cfg.datastore_product}/{self.fileset}" if self.fileset else ""
        return f"{cfg.name}: IN batch {self.name} written to {self.fits_path}{published}"


async def in_batch(dbs: Databases, cfg: LoadingConfig, var_dir: Path) -> InBatch:
    """Make, publish and record the config's IN batch once (seed 003: ``loader.py cfg
    init``; ``ippctl psps init``): its Filter and Survey tables, published on the config's
    product when it publishes. A second call finds it and does nothing."""
    from shared.psps import batches, builders  # astropy: imported when used

    directory = var_dir / "psps" / cfg.name
    db = dbs.ipptopsps
    done = await db.fetch_one(Q.psps_in_published, config=cfg.name)
    if done is not None:
        return InBatch(str(done["name"]), None, None, already=True)
    batch_id, name = await new_batch(db, cfg.name, "IN", 0)
    try:
        tables = builders.in_batch(cfg.name, int(cfg.survey_id))
        written = await asyncio.to_thread(batches.write, directory, name, "IN", cfg.name, tables)
        fileset = await publish(dbs, cfg, batch_id, name, "IN", written, 0)
    except (IppError, OSError) as exc:
        note = (await TextLimits.read(db)).fit("psps_batch", "note", str(exc))
        await db.execute(Q.psps_batch_failed, batch_id=batch_id, note=note)
        raise
    return InBatch(name, str(written.fits_path), fileset, already=False)
