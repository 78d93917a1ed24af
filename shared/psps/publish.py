"""Recording and publishing a built batch: the FITS file and manifest go into storage and, in
one transaction, become a fileset of the config's DataStore product while the batch row is
marked processed and loaded_to_datastore. Nothing is visible before that commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from shared.core.errors import DbIntegrityError
from shared.db.database import Database, Tx
from shared.db.queries import Q
from shared.distribution import datastore
from shared.distribution.bundles import file_digest
from shared.psps.batches import Written, batch_name
from shared.storage.store import Storage


async def new_batch(db: Database | Tx, config: str, batch_type: str, item_id: int) -> tuple[int, str]:
    """Reserve a batch id and its name ``B%08d``."""
    batch_id = await db.insert(Q.psps_batch_new, config=config, type=batch_type, item_id=item_id)
    name = batch_name(batch_id)
    await db.execute(Q.psps_batch_name, batch_id=batch_id, name=name)
    return batch_id, name


async def _product(db: Database, cfg: dict[str, Any]) -> Any:
    try:
        return await datastore.product(db, cfg["datastore_product"])
    except datastore.NotFound:
        # another loader may create it at the same moment: either way it exists after
        with contextlib.suppress(datastore.DataStoreError, DbIntegrityError):
            await datastore.add_product(db, cfg["datastore_product"], "psps",
                                        f"PSPS batches of loading config {cfg['name']}",
                                        ["batch", "type", "config"])
        return await datastore.product(db, cfg["datastore_product"])


async def publish(db: Database, cfg: dict[str, Any], batch_id: int, name: str, batch_type: str,
                  written: Written, detections: int,
                  also: Callable[[Tx], Awaitable[None]] | None = None) -> str | None:
    """Store the batch's files and register them (unless the config does not publish);
    returns the fileset name."""
    fileset = None
    files: list[datastore.NewFile] = []
    prod = None
    stored = f"datastore/{cfg['datastore_product']}/{name}/"
    storage = Storage(db)
    if cfg["datastore_publish"]:
        prod = await _product(db, cfg)
        prefix = f"neb://any/datastore/{cfg['datastore_product']}/{name}"
        manifest = written.manifest_path
        m_size, m_md5 = await asyncio.to_thread(file_digest, manifest)
        files = [datastore.NewFile(written.fits_path.name, written.bytes, written.md5sum, "fits",
                                   f"{prefix}/{written.fits_path.name}"),
                 datastore.NewFile(manifest.name, m_size, m_md5, "manifest",
                                   f"{prefix}/{manifest.name}")]
        await storage.delete_under(stored)
        for f, path in zip(files, (written.fits_path, manifest), strict=True):
            await storage.create_from_file(f.uri, path)  # a copy: the local one stays
        fileset = name

    async def record(tx: Tx) -> None:
        if prod is not None:
            await datastore.register_fileset(tx, prod, name, "psps", [name, batch_type,
                                                                       cfg["name"]], files)
        await tx.execute(Q.psps_batch_published, batch_id=batch_id, detections=detections,
                         fits_path=str(written.fits_path), fileset=fileset,
                         loaded="succeeded" if fileset else "pending")
        if also is not None:
            await also(tx)

    try:
        await db.transaction(record, name="psps_publish")
    except BaseException:
        if fileset is not None:  # never registered: its stored copies go again
            await storage.delete_under(stored)
        raise
    return fileset
