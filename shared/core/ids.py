"""PSPS identifiers computed from IPP and DVO values (REFERENCE 10).

Scalar and numpy-vectorised forms give identical results (the vectorised ones are used on
whole catalogs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ZONE_HEIGHT_DEG = 0.0083333
MJD_ORIGIN = 54101
WARP_ID_PREFIX, STACK_ID_PREFIX = 34, 35


def obj_id(ra: float, dec: float) -> int:
    """objID = floor(z)*10^13 + trunc(ra*10^6)*10^4 + trunc(frac(z)*10^4), z=(dec+90)/0.0083333."""
    z = (dec + 90.0) / ZONE_HEIGHT_DEG
    zone = math.floor(z)
    return int(zone * 10**13 + math.trunc(ra * 1e6) * 10**4 + math.trunc((z - zone) * 1e4))


def obj_ids(ra: np.ndarray[Any, Any], dec: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    z = (np.asarray(dec, dtype=np.float64) + 90.0) / ZONE_HEIGHT_DEG
    zone = np.floor(z)
    return (
        zone.astype(np.int64) * 10**13
        + np.trunc(np.asarray(ra, dtype=np.float64) * 1e6).astype(np.int64) * 10**4
        + np.trunc((z - zone) * 1e4).astype(np.int64)
    )


def zone_id(dec: float) -> int:
    return math.floor((90.0 + dec) / ZONE_HEIGHT_DEG)


def detect_id(mjd: float, photcode: int, ipp_idet: int) -> int:
    """detectID = floor(10^5*(MJD-54101))*10^9 + ccd*10^7 + IPP_IDET, ccd = photcode % 100."""
    ccd = photcode % 100
    return int(math.floor(1e5 * (mjd - MJD_ORIGIN)) * 10**9 + ccd * 10**7 + ipp_idet)


def detect_ids(mjd: float, photcode: int, ipp_idet: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    base = math.floor(1e5 * (mjd - MJD_ORIGIN)) * 10**9 + (photcode % 100) * 10**7
    return np.int64(base) + np.asarray(ipp_idet, dtype=np.int64)


def ipp_obj_id(cat_id: int, obj: int) -> int:
    return (cat_id << 32) + obj


def stack_detect_id(extern_id: int, det_id: int, *, warp: bool = False) -> int:
    prefix = WARP_ID_PREFIX if warp else STACK_ID_PREFIX
    return (prefix << 56) + (extern_id << 28) + det_id


def image_id(frame_id: int, ccd_id: int) -> int:
    return 100 * frame_id + ccd_id
