"""The stand-in DXLayer: what PSPS does with a published batch.

One pass: list the DataStore's products of type ``IPP-PSPS`` and note every fileset not seen
before; then take the batches with work to do, oldest first. A new batch is downloaded (size
and md5 checked against the listing), its manifest and FITS file are checked against each
other and against the VOTable description of its type (tables, columns, types, row counts, no
NaN), every table is converted to CSV and bulk-loaded into the staging tables: ``loaded``. A
loaded batch is merge_worthy when none of its primary keys repeats, inside the batch or
against what is already merged (a batch loaded twice fails here). A merge_worthy batch is
merged into the PSPS tables in one transaction (after ``odm_merge_delay_s``). A batch that
cannot be used is ``failed`` with the stage and the reason; the DXLayer keeps its copy until
the ODM is told to delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import fitsio
import numpy as np

from shared.core.errors import DbIntegrityError, IppError
from shared.core.log import get_logger
from shared.core.settings import Settings
from shared.db.database import Database, Tx
from shared.db.queries import QueryBook, load_queries
from shared.distribution import datastore
from shared.distribution.bundles import file_digest
from shared.distribution.client import FetchFailed, Limits, download, get_text
from shared.distribution.datastore import DataStoreError
from shared.psps import BATCH_TYPES
from sim.psps.tables import PspsTable, psps_tables
from sim.settings import StandIns

P = QueryBook(load_queries(Path(__file__).resolve().parent.parent / "sql"))
log = get_logger("dxlayer")
#: Batches handled per pass (the rest wait for the next one).
PER_PASS = 50
#: The product types the DXLayer polls: the IPP's name (seed 003: ``dsprodtool --add ...
#: --type IPP-PSPS``) and the one earlier versions of this project used.
PSPS_PRODUCTS = ("IPP-PSPS", "psps")


class Rejected(IppError):
    """A batch PSPS refuses; ``stage`` is where (load, merge_worthy, merge)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


def knob_fails(name: str, share: float) -> bool:
    """Whether the ``odm_fail_share`` knob fails this batch (fixed per name, so a test can
    tell which batches will fail; a reloaded item gets a new batch name)."""
    return share > 0 and zlib.crc32(name.encode()) % 10_000 < share * 10_000


@dataclass(frozen=True)
class Checked:
    kind: str
    tables: dict[str, Any]
    detections: int


# -- checking a downloaded batch -------------------------------------------------------------


def _manifest(path: Path, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("load", f"{path.name}: not a readable JSON manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise Rejected("load", f"{path.name}: the manifest is not a JSON object")
    for key, kind in (
        ("batch", str),
        ("type", str),
        ("fits", str),
        ("md5sum", str),
        ("bytes", int),
        ("tables", list),
    ):
        if not isinstance(manifest.get(key), kind):
            raise Rejected("load", f"{path.name}: {key!r} missing or not a {kind.__name__}")
    if manifest["batch"] != name:
        raise Rejected("load", f"{path.name}: names batch {manifest['batch']!r}, not {name!r}")
    if manifest["type"] not in BATCH_TYPES:
        raise Rejected("load", f"{path.name}: unknown batch type {manifest['type']!r}")
    return manifest


def _check_table(t: PspsTable, rows: Any, expected_rows: Any) -> None:
    names = list(rows.dtype.names or ())
    wanted = [c.name for c in t.table.columns]
    if names != wanted:
        raise Rejected("load", f"{t.name}: columns {names}, the VOTable has {wanted}")
    for c in t.table.columns:
        have = rows.dtype[c.name]
        if c.dtype.kind == "S":  # text: FITS readers give bytes or str
            if have.kind not in "SU":
                raise Rejected("load", f"{t.name}.{c.name}: stored as {have}, the VOTable says char")
            continue
        if have.kind != c.dtype.kind or have.itemsize != c.dtype.itemsize:
            raise Rejected("load", f"{t.name}.{c.name}: stored as {have}, the VOTable says {c.datatype}")
        if have.kind == "f" and not np.all(np.isfinite(rows[c.name])):
            raise Rejected(
                "load",
                f"{t.name}.{c.name}: NaN or infinite values (PSPS has no "
                "NULL: nulls must be the column's null value)",
            )
    if expected_rows != len(rows):
        raise Rejected("load", f"{t.name}: {len(rows)} rows, the manifest says {expected_rows}")


def check_batch(directory: Path, name: str, fits_name: str, manifest_name: str) -> Checked:
    """Read and check a downloaded batch against its manifest and its VOTable."""
    manifest = _manifest(directory / manifest_name, name)
    if manifest["fits"] != fits_name:
        raise Rejected("load", f"manifest names {manifest['fits']!r}, the fileset has {fits_name!r}")
    size, md5 = file_digest(directory / fits_name)
    if (size, md5) != (manifest["bytes"], manifest["md5sum"]):
        raise Rejected(
            "load",
            f"{fits_name}: {size} bytes md5 {md5}, the manifest says "
            f"{manifest['bytes']} bytes md5 {manifest['md5sum']}",
        )
    kind = manifest["type"]
    counts = {t.get("name"): t.get("rows") for t in manifest["tables"] if isinstance(t, dict)}
    tables: dict[str, Any] = {}
    try:
        with fitsio.FITS(str(directory / fits_name)) as hdus:
            extnames = [h.get_extname() for h in hdus[1:]]
            wanted = [t.name for t in psps_tables(kind)]
            if [e.upper() for e in extnames] != [w.upper() for w in wanted]:
                raise Rejected("load", f"{fits_name}: tables {extnames}, a {kind} batch has {wanted}")
            for hdu, t in zip(hdus[1:], psps_tables(kind), strict=True):
                rows = (
                    hdu.read()
                    if hdu.get_nrows()
                    else np.zeros(0, dtype=[(c.name, c.dtype) for c in t.table.columns])
                )
                _check_table(t, rows, counts.get(t.name))
                tables[t.name] = rows
    except OSError as exc:
        raise Rejected("load", f"{fits_name}: not a readable FITS file: {exc}") from None
    detections = sum(
        len(rows) for n, rows in tables.items() if n in ("Detection", "StackDetection", "ObjectThin")
    )
    return Checked(kind, tables, detections)


def write_csv(rows: Any, path: Path) -> None:
    """One table as CSV for LOAD DATA: strings quoted, floats with every digit they hold."""
    char = [i for i, n in enumerate(rows.dtype.names) if rows.dtype[n].kind == "S"]
    text = [i for i, n in enumerate(rows.dtype.names) if rows.dtype[n].kind == "U"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        if not char and not text:
            out.writerows(rows.tolist())
            return
        for row in rows.tolist():
            values = list(row)
            for i in char:
                values[i] = values[i].decode("utf-8", "replace").rstrip("\x00 ")
            for i in text:
                values[i] = values[i].rstrip("\x00 ")
            out.writerow(values)


# -- the DXLayer -----------------------------------------------------------------------------


class DxLayer:
    """The polling half of the stand-in (the ODM web service is the other)."""

    def __init__(
        self, db: Database, settings: Settings, knobs: StandIns, session: aiohttp.ClientSession
    ) -> None:
        self.db = db
        self.settings = settings
        self.session = session
        self.base = f"http://{settings.ds_host}:{settings.ds_port}/ds"
        self.knobs = knobs
        self.root = knobs.dxlayer_path(settings)
        self.limits = Limits.from_settings(settings)
        self.token = settings.dxlayer_ds_token

    def copy_dir(self, product: str, name: str) -> Path:
        """Where a batch's copy lives: inside the DXLayer's directory, whatever the names."""
        return inside(self.root, product, name)

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except (DataStoreError, IppError) as exc:
                log.warning("dxlayer_pass_failed", error=str(exc))
                busy = 0
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.knobs.dxlayer_poll_s)

    async def run_once(self) -> int:
        """Discover new batches, then move every batch with work one step on."""
        await self.discover()
        todo = await self.db.fetch_all(
            P.dx_batches_todo, limit=PER_PASS, merge_delay_us=int(self.knobs.odm_merge_delay_s * 1e6)
        )
        for batch in todo:
            await self.step(batch)
        return len(todo)

    async def discover(self) -> int:
        """Note the filesets of every psps product not seen before."""
        try:
            root = datastore.parse_listing(
                await get_text(self.session, f"{self.base}/index.txt", self.limits, self.token),
                "productID",
                f"{self.base}/index.txt",
            )
        except DataStoreError as exc:
            log.warning("datastore_unreachable", error=str(exc))
            return 0
        added = 0
        for row in root.rows:
            product, kind = row[0], row[3]
            if kind not in PSPS_PRODUCTS:
                continue
            if not datastore.NAME.match(product):
                log.warning("product_refused", product=product[:80], reason="not a valid product name")
                continue
            url = f"{self.base}/{product}/index.txt"
            try:
                names = datastore.parse_filesets(
                    await get_text(self.session, url, self.limits, self.token), url
                )
            except DataStoreError as exc:
                log.warning("product_unreadable", product=product, error=str(exc))
                continue
            for name in names:
                if not datastore.NAME.match(name):
                    log.warning(
                        "batch_refused", product=product, batch=name[:80], reason="not a valid fileset name"
                    )
                    continue
                added += await self.db.execute(P.dx_batch_seen, name=name, product=product)
        if added:
            log.info("batches_seen", count=added)
        return added

    async def step(self, batch: dict[str, Any]) -> None:
        name, status = batch["name"], batch["status"]
        try:
            if status == "new":
                await self.load(name, batch["product"])
            elif status == "loaded":
                await self.check_merge_worthy(name, str(batch["type"]))
            elif status == "merge_worthy":
                await self.merge(name, str(batch["type"]))
        except OSError as exc:  # the copy went meanwhile (deleted on request) or the disk failed
            await self._reject(batch, Rejected("load", f"{name}: {exc}"))
        except Rejected as exc:
            await self._reject(batch, exc)

    async def _reject(self, batch: dict[str, Any], exc: Rejected) -> None:
        name = batch["name"]
        await self.db.execute(
            P.dx_batch_failed,
            name=name,
            stage=exc.stage,
            reason=str(exc)[:1024],
            type=batch["type"],
            copy_path=str(self.copy_dir(batch["product"], name)),
        )
        for t in psps_tables(str(batch["type"])) if batch["type"] else ():
            await self.db.execute(t.unstage, batch=name)
        log.warning("batch_failed", batch=name, stage=exc.stage, reason=str(exc))

    # -- the steps --------------------------------------------------------------------------

    async def _fetch(self, name: str, product: str, directory: Path) -> tuple[str, str]:
        """Download the fileset into ``directory``; (fits file, manifest file)."""
        url = f"{self.base}/{product}/{name}"
        files = datastore.parse_files(
            await get_text(self.session, f"{url}/index.txt", self.limits, self.token), url
        )
        fits_files = [f for f in files if f.type == "fits"]
        manifests = [
            f for f in files if f.type == "manifest" or (f.type == "text" and f.component == "manifest")
        ]
        if len(fits_files) != 1 or len(manifests) != 1:
            raise Rejected(
                "load",
                f"fileset {name}: expected one fits and one manifest file, "
                f"got {[(f.name, f.type) for f in files]}",
            )
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        for f in files:
            await download(self.session, f"{url}/{f.name}", f, directory / f.name, self.limits, self.token)
        return fits_files[0].name, manifests[0].name

    async def load(self, name: str, product: str) -> None:
        directory = self.copy_dir(product, name)
        try:
            fits_name, manifest_name = await self._fetch(name, product, directory)
        except FetchFailed as exc:
            if exc.status == 404:
                raise Rejected(
                    "load", f"fileset {product}/{name} is no longer on the DataStore: {exc}"
                ) from None
            wait = min(60.0, self.knobs.dxlayer_poll_s * 4)
            await self.db.execute(
                P.dx_batch_try_later, name=name, reason=str(exc)[:1024], wait_us=int(wait * 1e6)
            )
            log.warning("batch_download_failed", batch=name, error=str(exc), retry_in_s=wait)
            return
        except DataStoreError as exc:
            raise Rejected("load", f"fileset {product}/{name}: {exc}") from None
        checked = await asyncio.to_thread(check_batch, directory, name, fits_name, manifest_name)
        if knob_fails(name, self.knobs.odm_fail_share):
            raise Rejected("load", "refused by the stand-in's odm_fail_share knob (a test of failed batches)")
        for table, rows in checked.tables.items():
            await asyncio.to_thread(write_csv, rows, directory / f"{table}.csv")

        async def stage_all(tx: Tx) -> None:
            for t in psps_tables(checked.kind):
                await tx.execute(t.unstage, batch=name)
                await tx.execute(t.load, path=str(directory / f"{t.name}.csv"), batch=name)
            await tx.execute(
                P.dx_batch_loaded,
                name=name,
                type=checked.kind,
                detections=checked.detections,
                copy_path=str(directory),
            )

        await self.db.transaction(stage_all, name="dx_load")
        for t in psps_tables(checked.kind):
            (directory / f"{t.name}.csv").unlink(missing_ok=True)
        log.info("batch_loaded", batch=name, type=checked.kind, detections=checked.detections)

    async def check_merge_worthy(self, name: str, kind: str) -> None:
        problems = []
        for t in psps_tables(kind):
            within = int(await self.db.fetch_val(t.duplicates_within, batch=name) or 0)
            merged = int(await self.db.fetch_val(t.duplicates_merged, batch=name) or 0)
            if within:
                problems.append(f"{t.name}: {within} primary keys repeated inside the batch")
            if merged:
                problems.append(
                    f"{t.name}: {merged} rows already merged (primary key "
                    f"{','.join(t.table.primary_key)}; a batch loaded twice?)"
                )
        if problems:
            raise Rejected("merge_worthy", "; ".join(problems))
        await self.db.execute(P.dx_batch_merge_worthy, name=name)
        log.info("batch_merge_worthy", batch=name)

    async def merge(self, name: str, kind: str) -> None:
        async def merge_all(tx: Tx) -> None:
            for t in psps_tables(kind):
                await tx.execute(t.merge, batch=name)
                await tx.execute(t.unstage, batch=name)
            await tx.execute(P.dx_batch_merged, name=name)

        try:
            await self.db.transaction(merge_all, name="dx_merge")
        except DbIntegrityError as exc:  # merged meanwhile by another batch
            raise Rejected("merge", f"duplicate primary key while merging: {exc}") from None
        log.info("batch_merged", batch=name)


def _remove_inside(root: Path, path: Path) -> None:
    """Remove the copy at ``path`` if it resolves inside ``root`` (and is not ``root``)."""
    real, base = path.resolve(), root.resolve()
    if real.is_relative_to(base) and real != base:
        shutil.rmtree(real, True)


def inside(root: Path, product: str, name: str) -> Path:
    """``root/product/name``, refused (Rejected) unless both are plain names (the listing's
    rules) and the result resolves inside ``root``."""
    for part in (product, name):
        if not datastore.NAME.match(part):
            raise Rejected("load", f"{part[:80]!r} is not a valid product or fileset name")
    path = root / product / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise Rejected("load", f"{product}/{name} resolves outside the DXLayer's directory")
    return path


async def delete_copy(db: Database, root: Path, name: str) -> bool:
    """Delete the DXLayer's copy of a batch (the ODM's DELETE); False for an unknown batch."""
    row = await db.fetch_one(P.dx_batch_get, name=name)
    if row is None:
        return False
    path = Path(row["copy_path"]) if row["copy_path"] else inside(root, row["product"], name)
    if row["status"] == "new":
        await db.execute(
            P.dx_batch_failed,
            name=name,
            stage="load",
            type=None,
            copy_path=str(path),
            reason="its copy was deleted on request before it was loaded",
        )
    await asyncio.to_thread(_remove_inside, root, path)
    await db.execute(P.dx_batch_copy_deleted, name=name)
    return True
