"""IPP catalogs (REFERENCE 8): cmf (one chip or skycell) and smf (one exposure).

The PS1_V5 detection table is one list of (column, type) pairs; writers and readers use it,
so no column list is repeated elsewhere. Unsigned columns are stored signed with TZERO
(2147483648 for U32, 32768 for U16), which astropy writes and reads back as unsigned.

- cmf: primary header (the chip or skycell header keywords) + one BINTABLE.
- smf: primary header (exposure: FILTERID, MJD-OBS, EXPTIME, AIRMASS, boresight), then per
  chip ``XYnn.hdr`` (image extension with NAXIS=0 holding the chip header, EXTDATA='XYnn.psf')
  and ``XYnn.psf`` (the table, EXTHEAD='XYnn.hdr', EXTTYPE='PS1_V5').
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np
from astropy.io import fits

from shared.core.errors import IppError, one_line

FORMAT_VERSION = "PS1_V5"

#: PS1_V5 columns in order (REFERENCE 8). Types: F32 unless said.
PS1_V5: tuple[tuple[str, str], ...] = (
    ("IPP_IDET", "U32"),
    ("X_PSF", "F32"),
    ("Y_PSF", "F32"),
    ("X_PSF_SIG", "F32"),
    ("Y_PSF_SIG", "F32"),
    ("POSANGLE", "F32"),
    ("PLTSCALE", "F32"),
    ("PSF_INST_MAG", "F32"),
    ("PSF_INST_MAG_SIG", "F32"),
    ("PSF_INST_FLUX", "F32"),
    ("PSF_INST_FLUX_SIG", "F32"),
    ("AP_MAG", "F32"),
    ("AP_MAG_RAW", "F32"),
    ("AP_MAG_RADIUS", "F32"),
    ("AP_FLUX", "F32"),
    ("AP_FLUX_SIG", "F32"),
    ("AP_NPIX", "S32"),
    ("CAL_PSF_MAG", "F32"),
    ("CAL_PSF_MAG_SIG", "F32"),
    ("RA_PSF", "F64"),
    ("DEC_PSF", "F64"),
    ("PEAK_FLUX_AS_MAG", "F32"),
    ("SKY", "F32"),
    ("SKY_SIGMA", "F32"),
    ("PSF_CHISQ", "F32"),
    ("CR_NSIGMA", "F32"),
    ("EXT_NSIGMA", "F32"),
    ("PSF_MAJOR", "F32"),
    ("PSF_MINOR", "F32"),
    ("PSF_THETA", "F32"),
    ("PSF_CORE", "F32"),
    ("PSF_FWHM_MAJ", "F32"),
    ("PSF_FWHM_MIN", "F32"),
    ("PSF_QF", "F32"),
    ("PSF_QF_PERFECT", "F32"),
    ("PSF_NDOF", "S32"),
    ("PSF_NPIX", "S32"),
    ("MOMENTS_XX", "F32"),
    ("MOMENTS_XY", "F32"),
    ("MOMENTS_YY", "F32"),
    ("MOMENTS_M3C", "F32"),
    ("MOMENTS_M3S", "F32"),
    ("MOMENTS_M4C", "F32"),
    ("MOMENTS_M4S", "F32"),
    ("MOMENTS_R1", "F32"),
    ("MOMENTS_RH", "F32"),
    ("KRON_FLUX", "F32"),
    ("KRON_FLUX_ERR", "F32"),
    ("KRON_FLUX_INNER", "F32"),
    ("KRON_FLUX_OUTER", "F32"),
    ("SKY_LIMIT_RAD", "F32"),
    ("SKY_LIMIT_FLUX", "F32"),
    ("SKY_LIMIT_SLOPE", "F32"),
    ("FLAGS", "U32"),
    ("FLAGS2", "U32"),
    ("N_FRAMES", "U16"),
    ("PADDING", "S16"),
)

#: FITS TFORM, numpy dtype and TZERO of each type.
_TYPES: dict[str, tuple[str, str, int | None]] = {
    "F32": ("E", "f4", None),
    "F64": ("D", "f8", None),
    "S32": ("J", "i4", None),
    "S16": ("I", "i2", None),
    "U32": ("J", "u4", 2147483648),
    "U16": ("I", "u2", 32768),
}

#: FLAGS bits (same as PSPS infoFlag).
FLAGS = {
    "PSFMODEL": 0x1,
    "EXTMODEL": 0x2,
    "FITTED": 0x4,
    "FAIL": 0x8,
    "POOR": 0x10,
    "PAIR": 0x20,
    "PSFSTAR": 0x40,
    "SATSTAR": 0x80,
    "BLEND": 0x100,
    "EXTERNAL": 0x200,
    "BADPSF": 0x400,
    "DEFECT": 0x800,
    "SATURATED": 0x1000,
    "CR_LIMIT": 0x2000,
    "EXT_LIMIT": 0x4000,
    "MOMENTS_FAILURE": 0x8000,
}


class CatalogError(IppError):
    """A cmf/smf file is missing parts, has the wrong columns, or is not FITS at all."""


def dtype() -> np.dtype[Any]:
    """The numpy record dtype of a PS1_V5 table."""
    return np.dtype([(name, _TYPES[kind][1]) for name, kind in PS1_V5])


def empty_table(n: int) -> np.ndarray[Any, Any]:
    return np.zeros(n, dtype=dtype())


def table_hdu(table: np.ndarray[Any, Any], name: str | None = None) -> fits.BinTableHDU:
    """A BINTABLE with exactly the PS1_V5 columns, in order, unsigned ones with TZERO."""
    missing = [n for n, _ in PS1_V5 if n not in (table.dtype.names or ())]
    if missing:
        raise CatalogError(f"table lacks PS1_V5 column(s): {', '.join(missing)}")
    columns = []
    for column, kind in PS1_V5:
        tform, np_type, tzero = _TYPES[kind]
        data = np.asarray(table[column], dtype=np_type)
        columns.append(
            fits.Column(
                name=column, format=tform, array=data, **({"bzero": tzero} if tzero is not None else {})
            )
        )
    hdu = fits.BinTableHDU.from_columns(columns, name=name)
    hdu.header["EXTTYPE"] = FORMAT_VERSION
    return hdu


def _header(values: Mapping[str, Any]) -> fits.Header:
    header = fits.Header()
    for key, value in values.items():
        # Dotted or long keywords (FPA.FILTER, DETEFF.MAGREF) are HIERARCH cards, as in IPP.
        standard = (len(key) <= 8 and "." not in key) or key.startswith("HIERARCH ")
        header[key if standard else f"HIERARCH {key}"] = value
    return header


def _bytes(hdus: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdus.writeto(buf, output_verify="exception")
    return buf.getvalue()


def cmf_bytes(header: Mapping[str, Any], table: np.ndarray[Any, Any]) -> bytes:
    """A cmf: primary header with the chip/skycell keywords, then the detection table."""
    return _bytes(fits.HDUList([fits.PrimaryHDU(header=_header(header)), table_hdu(table)]))


@dataclass(frozen=True)
class ChipCatalog:
    class_id: str
    header: dict[str, Any]
    table: np.ndarray[Any, Any]


def smf_bytes(exposure_header: Mapping[str, Any], chips: list[ChipCatalog]) -> bytes:
    """An smf: exposure header, then XYnn.hdr / XYnn.psf per chip."""
    hdus: list[Any] = [fits.PrimaryHDU(header=_header(exposure_header))]
    for chip in chips:
        hdr = fits.ImageHDU(header=_header(chip.header), name=f"{chip.class_id}.hdr")
        hdr.header["EXTDATA"] = f"{chip.class_id}.psf"
        psf = table_hdu(chip.table, name=f"{chip.class_id}.psf")
        psf.header["EXTHEAD"] = f"{chip.class_id}.hdr"
        hdus += [hdr, psf]
    return _bytes(fits.HDUList(hdus))


def _check_columns(names: list[str], where: str) -> None:
    expected = [n for n, _ in PS1_V5]
    if names != expected:
        missing = sorted(set(expected) - set(names))
        raise CatalogError(
            f"{where}: columns differ from PS1_V5"
            + (f" (missing {', '.join(missing[:5])})" if missing else "")
        )


def _native(data: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The table in the PS1_V5 numpy layout (native byte order; TZERO already applied)."""
    out = empty_table(len(data))
    for name, _ in PS1_V5:
        out[name] = data[name]
    return out


def _header_dict(hdr: Any) -> dict[str, Any]:
    """A FITS header as a dict (keywords as written, HIERARCH names included)."""
    return {
        r["name"]: r["value"] for r in hdr.records() if r["name"] and r["name"] not in ("COMMENT", "HISTORY")
    }


@contextmanager
def _fits(source: Path | bytes, where: str) -> Iterator[fitsio.FITS]:
    """Open a catalog with fitsio (cfitsio: about ten times faster than astropy here); bytes
    are spooled to a temporary file first."""
    with contextlib.ExitStack() as stack:
        if isinstance(source, bytes):
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".fits"))
            tmp.write(source)
            tmp.flush()
            path = tmp.name
        else:
            path = str(source)
        try:
            handle = stack.enter_context(fitsio.FITS(path))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{where}: not a readable FITS file: {one_line(exc)}") from None
        yield handle


def _table(hdu: Any, where: str) -> np.ndarray[Any, Any]:
    if hdu.get_exttype() != "BINARY_TBL":
        raise CatalogError(f"{where}: not a binary table")
    _check_columns(list(hdu.get_colnames()), where)
    return _native(hdu.read())


def read_cmf(source: Path | bytes) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    """The primary header and the detection table of a cmf."""
    where = str(source) if isinstance(source, Path) else "cmf"
    try:
        with _fits(source, where) as f:
            if len(f) < 2:
                raise CatalogError(f"{where}: no detection table after the primary header")
            return _header_dict(f[0].read_header()), _table(f[1], where)
    except CatalogError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CatalogError(f"{where}: not a readable FITS catalog: {one_line(exc)}") from None


def read_smf(source: Path | bytes) -> tuple[dict[str, Any], list[ChipCatalog]]:
    """The exposure header and every chip's header and table; CatalogError if any part
    is missing or malformed (this is the "opens as a valid smf" check)."""
    where = str(source) if isinstance(source, Path) else "smf"
    try:
        return _read_smf(source, where)
    except CatalogError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CatalogError(f"{where}: not a readable smf: {one_line(exc)}") from None


def _read_smf(source: Path | bytes, where: str) -> tuple[dict[str, Any], list[ChipCatalog]]:
    with _fits(source, where) as f:
        hdus = {str(h.get_extname()).upper(): h for h in f[1:]}
        chips = []
        for name, hdu in hdus.items():
            if not name.endswith(".HDR"):
                continue
            class_id = name[:-4]
            header = _header_dict(hdu.read_header())
            psf_name = str(header.get("EXTDATA", "")).upper()
            if psf_name != f"{class_id}.PSF" or psf_name not in hdus:
                raise CatalogError(f"{where}: {class_id}.hdr has no matching table")
            table = hdus[psf_name]
            if str(table.read_header().get("EXTTYPE", "")).strip() != FORMAT_VERSION:
                raise CatalogError(f"{where}: {psf_name} is not {FORMAT_VERSION}")
            chips.append(ChipCatalog(class_id, header, _table(table, f"{where}[{psf_name}]")))
        if not chips:
            raise CatalogError(f"{where}: no chip extensions")
        return _header_dict(f[0].read_header()), chips
