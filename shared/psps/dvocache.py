"""DVO look-ups for the loader: which DVO object and detection each smf detection is.

A detection is found by (Images.dat IMAGE_ID whose EXTERN_ID is the chip's IMAGEID, DET_ID =
IPP_IDET) among the measurements of the regions its position overlaps (REFERENCE 9). Only
regions overlapping the wanted positions are read, and kept. A look-up of a whole exposure
first selects the region's measurements of the wanted images in one pass (a lookup table
over IMAGE_ID), then sorts just those by (IMAGE_ID, DET_ID) and searches them, so a dense
region of millions of measurements is never sorted whole. A file is read again only when its
modification time (or size) changes, so a region rewritten while loading is picked up, and
an unchanged one is never read twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.formats.dvo import DvoDatabase, DvoError, Region

Array = np.ndarray[Any, Any]
#: How far (degrees) a detection may lie from its object (regions are chosen with this margin).
MARGIN_DEG = 2.0 / 3600


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DvoError(f"{path}: {exc.strerror or exc}") from None
    return st.st_mtime_ns, st.st_size


@dataclass
class _RegionData:
    stamps: tuple[tuple[int, int], ...]
    measurements: Array
    objects: Array
    image_id: Array  # contiguous copies of the columns every look-up scans
    det_id: Array


@dataclass(frozen=True)
class Found:
    """Per detection: whether DVO has it, and its ids and calibration."""

    found: Array
    detect_id: Array
    obj_id: Array
    ipp_obj_id: Array
    region: Array
    m_cal: Array
    photcode: Array


class DvoCache:
    """Images, photcodes, the sky table and regions of one DVO database, re-read on change."""

    def __init__(self, root: Path) -> None:
        self.db = DvoDatabase(root)
        self._tables: dict[str, tuple[tuple[int, int], Any]] = {}
        self._regions: dict[int, _RegionData] = {}
        self.reads = 0

    def _table(self, name: str, loader: Any) -> Any:
        path = self.db.path(name)
        stamp = _stamp(path)
        cached = self._tables.get(name)
        if cached is None or cached[0] != stamp:
            self.reads += 1
            cached = (stamp, loader())
            self._tables[name] = cached
        return cached[1]

    def images(self) -> Array:
        return self._table("Images.dat", self.db.images)  # type: ignore[no-any-return]

    def photcodes(self) -> Array:
        return self._table("Photcodes.dat", self.db.photcodes)  # type: ignore[no-any-return]

    def regions(self) -> list[Region]:
        return self._table("SkyTable.fits", self.db.regions)  # type: ignore[no-any-return]

    def image_ids(self, extern_ids: Array) -> Array:
        """IMAGE_ID of each EXTERN_ID (-1 where Images.dat has none)."""
        images = self.images()
        if len(images) == 0:
            return np.full(len(extern_ids), -1, dtype=np.int64)
        order = np.argsort(images["EXTERN_ID"], kind="stable")
        ext = images["EXTERN_ID"][order]
        pos = np.clip(np.searchsorted(ext, extern_ids), 0, len(ext) - 1)
        return np.where(ext[pos] == extern_ids, images["IMAGE_ID"][order][pos], -1).astype(np.int64)

    def region(self, region: Region) -> _RegionData:
        files = self.db.region_files(region)
        stamps = (_stamp(files["cpm"]), _stamp(files["cpt"]))
        data = self._regions.get(region.index)
        if data is None or data.stamps != stamps:
            self.reads += 1
            meas = self.db.measurements(region)
            data = _RegionData(
                stamps,
                meas,
                self.db.objects(region),
                np.ascontiguousarray(meas["IMAGE_ID"]),
                np.ascontiguousarray(meas["DET_ID"]),
            )
            self._regions[region.index] = data
        return data

    def overlapping(self, ra: Array, dec: Array) -> list[Region]:
        if len(ra) == 0:
            return []
        r0, r1 = float(np.min(ra)) - MARGIN_DEG, float(np.max(ra)) + MARGIN_DEG
        d0, d1 = float(np.min(dec)) - MARGIN_DEG, float(np.max(dec)) + MARGIN_DEG
        return [
            r for r in self.regions() if r.r_min <= r1 and r.r_max >= r0 and r.d_min <= d1 and r.d_max >= d0
        ]

    def find(self, image_id: Array, det_id: Array, ra: Array, dec: Array) -> Found:
        """Look up every detection (vectorised per region)."""
        n = len(det_id)
        want = (np.asarray(image_id, dtype=np.int64) << 32) | np.asarray(det_id, dtype=np.int64)
        out = Found(
            np.zeros(n, dtype=bool),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.full(n, -1, dtype=np.int32),
            np.zeros(n, dtype=np.float32),
            np.zeros(n, dtype=np.int32),
        )
        images = np.unique(np.asarray(image_id, dtype=np.int64))
        for region in self.overlapping(np.asarray(ra), np.asarray(dec)):
            data = self.region(region)
            todo = np.nonzero(~out.found)[0]
            if len(todo) == 0:
                break
            column = data.image_id
            if len(column) == 0:
                continue
            candidates = np.nonzero(np.isin(column, images, kind="table"))[0]
            if len(candidates) == 0:
                continue
            keys = (column[candidates].astype(np.int64) << 32) | data.det_id[candidates].astype(np.int64)
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            pos = np.clip(np.searchsorted(keys, want[todo]), 0, len(keys) - 1)
            hit = keys[pos] == want[todo]
            rows = candidates[order[pos[hit]]]
            idx = todo[hit]
            meas = data.measurements[rows]
            ave = meas["AVE_REF"].astype(np.int64)
            if len(ave) and (ave.min() < 0 or ave.max() >= len(data.objects)):
                raise DvoError(f"region {region.name}: AVE_REF outside its {len(data.objects)} objects")
            objs = data.objects[ave]
            out.found[idx] = True
            out.detect_id[idx] = meas["EXT_ID"]
            out.obj_id[idx] = objs["EXT_ID"]
            out.ipp_obj_id[idx] = (objs["CAT_ID"].astype(np.int64) << 32) + objs["OBJ_ID"]
            out.region[idx] = region.index
            out.m_cal[idx] = meas["M_CAL"]
            out.photcode[idx] = meas["PHOTCODE"]
        return out
