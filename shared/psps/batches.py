"""PSPS batches: tables filled column by column from the VOTable descriptions, checked, and
written as one FITS file (a BINTABLE per PSPS table) with a manifest.

The columns come from ``shared.psps.schema`` (the VOTable files); a builder hands in values by
column name. NaN becomes the column's null value; a column the builder does not give is all
nulls if the description has a null value and an error otherwise. Validation refuses values
outside a column's type, NaN or infinity in a column without a null value, and duplicate
primary keys, naming the table and column.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from shared.core.errors import IppError
from shared.distribution.bundles import HashingWriter
from shared.psps.schema import Table, batch_tables

Array = np.ndarray[Any, Any]
PROCESSING_VERSION = 1


class BatchError(IppError):
    """A batch that must not be published; the reason names the table and column."""


def batch_name(batch_id: int) -> str:
    return f"B{batch_id:08d}"


@dataclass(frozen=True)
class BuiltTable:
    table: Table
    rows: Array


def fill(table: Table, values: Mapping[str, Any], n: int) -> BuiltTable:
    """A structured array of the table's columns, from ``values`` (scalars broadcast)."""
    unknown = sorted(set(values) - {c.name for c in table.columns})
    if unknown:
        raise BatchError(f"{table.name}: no such columns {', '.join(unknown)}")
    rows = np.zeros(n, dtype=[(c.name, c.dtype) for c in table.columns])
    for c in table.columns:
        if c.name not in values:
            if c.null is None:
                raise BatchError(f"{table.name}.{c.name}: no value given and the column has no null value")
            rows[c.name] = c.null
            continue
        raw = values[c.name]
        if c.datatype == "char":
            rows[c.name] = np.broadcast_to(np.asarray(raw, dtype=c.dtype), (n,))
            continue
        data = np.broadcast_to(np.asarray(raw, dtype=np.float64 if c.dtype.kind == "f" else None), (n,))
        if data.dtype.kind == "f":
            bad = ~np.isfinite(data)
            if bad.any():
                if c.null is None:
                    raise BatchError(
                        f"{table.name}.{c.name}: {int(bad.sum())} values are NaN or "
                        "infinite and the column has no null value"
                    )
                data = np.where(bad, c.null, data)
        if c.dtype.kind in "iu":
            if data.dtype.kind == "f" and not np.all(data == np.round(data)):
                raise BatchError(f"{table.name}.{c.name}: non-integer values")
            info = np.iinfo(c.dtype)
            if len(data) and (np.min(data) < info.min or np.max(data) > info.max):
                raise BatchError(
                    f"{table.name}.{c.name}: values outside {c.dtype} ({np.min(data)}..{np.max(data)})"
                )
        elif c.dtype == np.float32 and len(data):
            big = np.abs(data[np.isfinite(data)]) > np.finfo(np.float32).max
            if big.any():
                raise BatchError(f"{table.name}.{c.name}: values too large for REAL")
        rows[c.name] = data
    return BuiltTable(table, rows)


def without_duplicates(built: BuiltTable) -> tuple[BuiltTable, int]:
    """The table with every repeated primary key discarded, the first row of each kept (in
    the order given), and how many were discarded (seed 003: "discarding duplicates where
    necessary")."""
    if len(built.rows) < 2 or not built.table.primary_key:
        return built, 0
    cols = [built.rows[k] for k in built.table.primary_key]
    position = np.arange(len(built.rows))
    order = np.lexsort([position, *cols[::-1]])  # by key, then by position: firsts lead
    repeat = np.ones(len(order) - 1, dtype=bool)
    for col in cols:
        ordered = col[order]
        repeat &= ordered[1:] == ordered[:-1]
    if not repeat.any():
        return built, 0
    keep = np.ones(len(built.rows), dtype=bool)
    keep[order[1:][repeat]] = False
    return BuiltTable(built.table, built.rows[keep]), int(repeat.sum())


def check_keys(built: BuiltTable) -> None:
    """No duplicate primary keys (sorted by the key columns, neighbours compared)."""
    if len(built.rows) < 2:
        return
    cols = [built.rows[k] for k in built.table.primary_key]
    order = np.lexsort(cols[::-1])
    same = np.ones(len(order) - 1, dtype=bool)
    for col in cols:
        ordered = col[order]
        same &= ordered[1:] == ordered[:-1]
    if same.any():
        raise BatchError(
            f"{built.table.name}: {int(same.sum())} duplicate primary keys "
            f"({', '.join(built.table.primary_key)})"
        )


_FITS_FORMAT = {"i8": "K", "i4": "J", "i2": "I", "u1": "B", "f8": "D", "f4": "E"}
BLOCK = 2880


@functools.lru_cache(maxsize=64)
def _header_template(table: Table) -> fits.Header:
    """The BINTABLE header astropy writes for the table's columns (TFORM, TUNIT, TNULL),
    made once per table: only NAXIS2 differs from one batch to the next."""
    cols = []
    for c in table.columns:
        kind = c.dtype.str.lstrip("<>|=")
        form = f"{c.arraysize or 1}A" if c.datatype == "char" else _FITS_FORMAT[kind]
        extra: dict[str, Any] = {}
        if c.unit:
            extra["unit"] = c.unit
        if c.datatype != "char" and c.dtype.kind in "iu" and c.null is not None:
            extra["null"] = int(c.null)
        cols.append(fits.Column(name=c.name, format=form, array=np.zeros(0, dtype=c.dtype), **extra))
    return fits.BinTableHDU.from_columns(cols, name=table.name).header


def _table_header(built: BuiltTable) -> bytes:
    header = _header_template(built.table).copy()
    header["NAXIS2"] = len(built.rows)
    return str(header.tostring()).encode("ascii")


def _write_fits(out: HashingWriter, primary: fits.Header, tables: list[BuiltTable]) -> None:
    """The FITS file: astropy makes the headers; the rows go out as one big-endian array per
    table (the BINTABLE layout), which is far faster than astropy's column-wise writer."""
    out.write(primary.tostring().encode("ascii"))
    for b in tables:
        out.write(_table_header(b))
        be = np.ascontiguousarray(b.rows.astype(b.rows.dtype.newbyteorder(">")))
        out.write(be.view(np.uint8))
        out.write(b"\0" * (-be.nbytes % BLOCK))


@dataclass(frozen=True)
class Written:
    fits_path: Path
    manifest_path: Path
    bytes: int
    md5sum: str
    rows: dict[str, int]


def write(directory: Path, name: str, batch_type: str, config: str, tables: list[BuiltTable]) -> Written:
    """``<name>.fits`` (a BINTABLE per table, in the VOTable's order) and
    ``<name>.manifest.json``, written through temporary names and fsynced."""
    expected = [t.name for t in batch_tables(batch_type)]
    if [b.table.name for b in tables] != expected:
        raise BatchError(
            f"{name}: tables {[b.table.name for b in tables]}, a {batch_type} batch has {expected}"
        )
    for b in tables:
        check_keys(b)
    directory.mkdir(parents=True, exist_ok=True)
    fits_path = directory / f"{name}.fits"
    tmp = directory / f".{name}.fits.tmp"
    primary = fits.PrimaryHDU().header
    primary["EXTEND"] = True
    for key, value in (
        ("BATCH", name),
        ("BTYPE", batch_type),
        ("CONFIG", config),
        ("PROCVER", PROCESSING_VERSION),
    ):
        primary[key] = value
    with open(tmp, "wb") as fh:
        out = HashingWriter(fh)
        _write_fits(out, primary, tables)
        fh.flush()
        os.fsync(fh.fileno())
    md5, size = out.md5, out.size
    os.replace(tmp, fits_path)
    rows = {b.table.name: len(b.rows) for b in tables}
    manifest = {
        "batch": name,
        "type": batch_type,
        "config": config,
        "fits": fits_path.name,
        "bytes": size,
        "md5sum": md5.hexdigest(),
        "tables": [{"name": t, "rows": r} for t, r in rows.items()],
    }
    manifest_path = directory / f"{name}.manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return Written(fits_path, manifest_path, size, md5.hexdigest(), rows)
