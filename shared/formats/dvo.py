"""DVO databases (REFERENCE 9): Images.dat, Photcodes.dat, SkyTable.fits and per-region
.cpt (objects), .cpm (measurements) and .cps (per-filter averages).

Every file is FITS: a primary header and one BINTABLE. Unsigned DVO integers are written as
plain signed J/K without TZERO, as DVO does. The column lists below are the single
definition used by the writer and the reader.

Region NAMEs follow the ``s2230/6791.01`` shape: a declination band directory and
``<index>.<depth>``; choices are documented in docs/formats.md.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from shared.core.errors import IppError, one_line

Array = np.ndarray[Any, Any]

IMAGES_COLUMNS = (
    ("IMAGE_ID", "J"),
    ("EXTERN_ID", "K"),
    ("SOURCE_ID", "K"),
    ("PARENT_ID", "K"),
    ("PHOTCODE", "J"),
    ("CCDNUM", "I"),
    ("EXPTIME", "E"),
    ("TZERO", "D"),
    ("AIRMASS", "E"),
    ("NAME", "32A"),
    ("CRVAL1", "D"),
    ("CRVAL2", "D"),
    ("CRPIX1", "E"),
    ("CRPIX2", "E"),
    ("CDELT1", "D"),
    ("CDELT2", "D"),
)
PHOTCODE_COLUMNS = (
    ("CODE", "J"),
    ("NAME", "32A"),
    ("TYPE", "16A"),
    ("C_LAM", "J"),
    ("K", "E"),
    ("FILTER", "8A"),
)
SKYTABLE_COLUMNS = (
    ("R_MIN", "D"),
    ("R_MAX", "D"),
    ("D_MIN", "D"),
    ("D_MAX", "D"),
    ("INDEX", "J"),
    ("DEPTH", "I"),
    ("TABLE", "I"),
    ("NAME", "64A"),
)
CPT_COLUMNS = (
    ("RA", "D"),
    ("DEC", "D"),
    ("OBJ_ID", "J"),
    ("CAT_ID", "J"),
    ("EXT_ID", "K"),
    ("OFF_MEASURE", "J"),
    ("NMEASURE", "J"),
    ("FLAGS", "J"),
)
CPM_COLUMNS = (
    ("RA", "D"),
    ("DEC", "D"),
    ("MAG", "E"),
    ("M_CAL", "E"),
    ("AVE_REF", "J"),
    ("DET_ID", "J"),
    ("OBJ_ID", "J"),
    ("CAT_ID", "J"),
    ("EXT_ID", "K"),
    ("IMAGE_ID", "J"),
    ("PHOTCODE", "J"),
    ("M_TIME", "D"),
    ("AIRMASS", "E"),
)
CPS_COLUMNS = (
    ("AVE_REF", "J"),
    ("PHOTCODE", "J"),
    ("MAG", "E"),
    ("MAG_ERR", "E"),
    ("NMEAS", "J"),
    ("FLAGS", "J"),
)

_NP = {"J": "i4", "K": "i8", "I": "i2", "E": "f4", "D": "f8"}


class DvoError(IppError):
    """A DVO file is missing or malformed."""


def dtype(columns: tuple[tuple[str, str], ...]) -> np.dtype[Any]:
    fields = []
    for name, form in columns:
        fields.append((name, f"S{form[:-1]}" if form.endswith("A") else _NP[form]))
    return np.dtype(fields)


def empty(columns: tuple[tuple[str, str], ...], n: int) -> Array:
    return np.zeros(n, dtype=dtype(columns))


def table_bytes(
    columns: tuple[tuple[str, str], ...],
    rows: Array,
    header: dict[str, Any] | None = None,
    extname: str | None = None,
) -> bytes:
    cols = [fits.Column(name=n, format=f, array=rows[n]) for n, f in columns]
    table = fits.BinTableHDU.from_columns(cols, name=extname)
    primary = fits.PrimaryHDU()
    for key, value in (header or {}).items():
        primary.header[key] = value
    buf = io.BytesIO()
    fits.HDUList([primary, table]).writeto(buf)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary name and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_table(path: Path, columns: tuple[tuple[str, str], ...]) -> tuple[fits.Header, Array]:
    """The primary header and the table, checked to have the expected columns."""
    try:
        with fits.open(path, memmap=False) as hdus:
            if len(hdus) < 2:
                raise DvoError(f"{path}: no table extension")
            data = hdus[1].data
            names = list(data.columns.names)
            expected = [n for n, _ in columns]
            if names != expected:
                raise DvoError(f"{path}: columns {names} differ from {expected}")
            if any(k.startswith(("TZERO", "TSCAL")) for k in hdus[1].header):
                out = empty(columns, len(data))  # scaled columns: astropy applies the scaling
                for name in expected:
                    out[name] = data[name]
            else:  # DVO's own layout: the stored big-endian rows are the values
                out = data.view(np.ndarray).astype(dtype(columns))
            return hdus[0].header.copy(), out
    except DvoError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise DvoError(f"{path}: not a readable DVO table: {one_line(exc)}") from None


@dataclass(frozen=True)
class RowFile:
    """A DVO table read by rows straight from its file, never whole: the data section's
    offset, its row count and the stored (big-endian) row type."""

    path: Path
    offset: int
    rows: int
    stored: np.dtype[Any]

    def read(self, start: int, count: int) -> Array:
        """Rows ``start`` .. ``start + count`` as stored (big-endian)."""
        count = max(0, min(count, self.rows - start))
        return np.fromfile(
            self.path, dtype=self.stored, count=count, offset=self.offset + start * self.stored.itemsize
        )


def row_file(path: Path, columns: tuple[tuple[str, str], ...]) -> RowFile:
    """The layout of a DVO table file, checked (its columns, unscaled, one row per stored
    record), for reading rows from it without loading it."""
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdus:
            if len(hdus) < 2:
                raise DvoError(f"{path}: no table extension")
            header = hdus[1].header
            names = [header.get(f"TTYPE{i + 1}") for i in range(int(header.get("TFIELDS", 0)))]
            expected = [n for n, _ in columns]
            if names != expected:
                raise DvoError(f"{path}: columns {names} differ from {expected}")
            stored = dtype(columns).newbyteorder(">")
            if any(k.startswith(("TZERO", "TSCAL")) for k in header) or header["NAXIS1"] != stored.itemsize:
                raise DvoError(f"{path}: not DVO's own row layout (scaled columns or padded rows)")
            offset = int(hdus.fileinfo(1)["datLoc"])
            rows = int(header["NAXIS2"])
    except DvoError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DvoError(f"{path}: not a readable DVO table: {one_line(exc)}") from None
    if offset + rows * stored.itemsize > os.path.getsize(path):
        raise DvoError(f"{path}: truncated ({rows} rows of {stored.itemsize} bytes declared)")
    return RowFile(path, offset, rows, stored)


@dataclass(frozen=True)
class Region:
    index: int
    name: str
    r_min: float
    r_max: float
    d_min: float
    d_max: float
    depth: int = 2

    def contains(self, ra: Array, dec: Array) -> Array:
        return (ra >= self.r_min) & (ra < self.r_max) & (dec >= self.d_min) & (dec < self.d_max)


def region_name(index: int, d_min: float, depth: int) -> str:
    band = f"{'n' if d_min >= 0 else 's'}{abs(round(d_min * 100)):04d}"
    return f"{band}/{index:04d}.{depth:02d}"


def region_grid(
    ra_min: float, ra_max: float, dec_min: float, dec_max: float, step_deg: float
) -> list[Region]:
    regions = []
    n_ra = max(1, int(np.ceil((ra_max - ra_min) / step_deg)))
    n_dec = max(1, int(np.ceil((dec_max - dec_min) / step_deg)))
    for j in range(n_dec):
        for i in range(n_ra):
            d0 = dec_min + j * step_deg
            index = j * n_ra + i + 1
            regions.append(
                Region(
                    index,
                    region_name(index, d0, 2),
                    ra_min + i * step_deg,
                    ra_min + (i + 1) * step_deg,
                    d0,
                    d0 + step_deg,
                )
            )
    return regions


class DvoDatabase:
    """A DVO catalog directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def region_files(self, region: Region) -> dict[str, Path]:
        base = self.root / region.name
        return {ext: base.with_name(f"{base.name}.{ext}") for ext in ("cpt", "cpm", "cps")}

    def images(self) -> Array:
        return read_table(self.path("Images.dat"), IMAGES_COLUMNS)[1]

    def photcodes(self) -> Array:
        return read_table(self.path("Photcodes.dat"), PHOTCODE_COLUMNS)[1]

    def regions(self) -> list[Region]:
        _, rows = read_table(self.path("SkyTable.fits"), SKYTABLE_COLUMNS)
        return [
            Region(
                int(r["INDEX"]),
                r["NAME"].decode().strip(),
                float(r["R_MIN"]),
                float(r["R_MAX"]),
                float(r["D_MIN"]),
                float(r["D_MAX"]),
                int(r["DEPTH"]),
            )
            for r in rows
            if int(r["TABLE"]) == 1
        ]

    def objects(self, region: Region) -> Array:
        return read_table(self.region_files(region)["cpt"], CPT_COLUMNS)[1]

    def measurements(self, region: Region) -> Array:
        return read_table(self.region_files(region)["cpm"], CPM_COLUMNS)[1]

    def measurement_rows(self, region: Region) -> RowFile:
        """The region's measurements, to be read by rows (a dense region is never loaded)."""
        return row_file(self.region_files(region)["cpm"], CPM_COLUMNS)

    def averages(self, region: Region) -> Array:
        return read_table(self.region_files(region)["cps"], CPS_COLUMNS)[1]
