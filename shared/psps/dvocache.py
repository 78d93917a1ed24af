"""DVO look-ups for the loader: which DVO object and detection each smf detection is.

A detection is found by (Images.dat IMAGE_ID whose EXTERN_ID is the chip's IMAGEID, DET_ID =
IPP_IDET) among the measurements of the regions its position overlaps (REFERENCE 9). Only
regions overlapping the wanted positions are read. A file is read again only when its
modification time (or size) changes, so a region rewritten while loading is picked up.

Memory is bounded by ``budget_bytes`` (setting ``dvo_cache_max_bytes``), with seed 003's
policy: when the loader moves to the next box (:meth:`DvoCache.enter_box`), regions that
overlap both boxes are kept and the rest dropped, and it chooses, from the box's queued smfs
and the DVO files' sizes, how to read the regions:

- **whole**: a region is read once and kept; an exposure's look-up selects the region's
  measurements of its images in one pass (a lookup table over IMAGE_ID), then sorts just
  those by (IMAGE_ID, DET_ID) and searches them. Fast when the regions fit the budget and
  several smfs share them.
- **rows**: the measurement file is never loaded. An index of its (IMAGE_ID, DET_ID) keys
  is built in one streaming pass (12 bytes a measurement), and each look-up reads only the
  rows it found, in windows, from the file. This is how a dense field (a medium-deep field's
  2 GB files) fits the budget, in place of ippToPsps' pre-ingest into MySQL.

A region that would not fit the budget beside the box's others is read by rows whatever the
box's choice; when one more region must come in, the regions outside the box go first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.formats.dvo import CPM_COLUMNS, DvoDatabase, DvoError, Region, RowFile, dtype

Array = np.ndarray[Any, Any]
#: How far (degrees) a detection may lie from its object (regions are chosen with this margin).
MARGIN_DEG = 2.0 / 3600
#: Memory a region read whole takes at its peak, per byte of its files (the stored rows, their
#: native copy and the contiguous key columns).
WHOLE_FACTOR = 2.2
#: Memory a region read by rows keeps, per measurement (its sorted keys and row numbers).
ROWS_BYTES_PER_MEASUREMENT = 12
#: Rows read at a time from a measurement file in rows mode (about 68 MB).
WINDOW_ROWS = 1 << 20
#: A default suited to a 24 GB host running several loaders.
DEFAULT_BUDGET_BYTES = 2 << 30
_NATIVE_CPM = dtype(CPM_COLUMNS)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DvoError(f"{path}: {exc.strerror or exc}") from None
    return st.st_mtime_ns, st.st_size


@dataclass
class _RegionData:
    """A region read whole."""

    stamps: tuple[tuple[int, int], ...]
    measurements: Array
    objects: Array
    image_id: Array  # contiguous copies of the columns every look-up scans
    det_id: Array

    @property
    def nbytes(self) -> int:
        return int(self.measurements.nbytes + self.objects.nbytes + self.image_id.nbytes + self.det_id.nbytes)


@dataclass
class _RegionIndex:
    """A region read by rows: the sorted (IMAGE_ID, DET_ID) keys of its measurement file and
    the row each key is on; its objects (far fewer than its measurements) whole."""

    stamps: tuple[tuple[int, int], ...]
    rows: RowFile
    keys: Array
    row_of: Array
    objects: Array

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.row_of.nbytes + self.objects.nbytes)


@dataclass(frozen=True)
class BoxPlan:
    """How a box's regions are read, and why (logged by the loader)."""

    mode: str
    regions: int
    dvo_bytes: int
    smfs: int
    kept: int
    dropped: int

    @property
    def bytes_per_smf(self) -> int:
        """The seed's ratio: DVO bytes on disk per smf queued in the box."""
        return self.dvo_bytes // max(1, self.smfs)


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
    """Images, photcodes, the sky table and regions of one DVO database, re-read on change,
    within a memory budget."""

    def __init__(self, root: Path, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.db = DvoDatabase(root)
        self.budget_bytes = budget_bytes
        self._tables: dict[str, tuple[tuple[int, int], Any]] = {}
        self._regions: OrderedDict[int, _RegionData | _RegionIndex] = OrderedDict()
        #: The current box's regions and its choice (None before the first box).
        self._box: set[int] = set()
        self.mode = "whole"
        self.reads = 0
        #: The most the regions held at once (bytes).
        self.peak_bytes = 0

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

    # -- the budget and the box -----------------------------------------------------------

    @property
    def cached_bytes(self) -> int:
        return sum(d.nbytes for d in self._regions.values())

    def _file_bytes(self, region: Region) -> int:
        files = self.db.region_files(region)
        return sum(_stamp(files[k])[1] for k in ("cpm", "cpt"))

    def enter_box(self, regions: list[Region], smfs: int) -> BoxPlan:
        """The loader moves to a box whose exposures overlap ``regions`` and which has
        ``smfs`` smfs queued. Seed 003: regions overlapping both boxes are kept, the rest
        dropped; then whole regions if they fit the budget and more than one smf shares them
        (or they are small), else rows."""
        wanted = {r.index for r in regions}
        dropped = [i for i in self._regions if i not in wanted]
        for index in dropped:
            del self._regions[index]
        self._box = wanted
        sizes = {r.index: self._file_bytes(r) for r in regions}
        needed = sum(
            WHOLE_FACTOR * sizes[r.index]
            for r in regions
            if not isinstance(self._regions.get(r.index), _RegionData)
        ) + sum(d.nbytes for d in self._regions.values() if isinstance(d, _RegionData))
        fits = needed <= self.budget_bytes
        self.mode = "whole" if fits and (smfs > 1 or needed <= self.budget_bytes // 8) else "rows"
        return BoxPlan(self.mode, len(regions), sum(sizes.values()), smfs, len(self._regions), len(dropped))

    def _make_room(self, size: float) -> bool:
        """Drop regions outside the box (least recently used first) until ``size`` more
        bytes fit the budget; whether they do."""
        for index in list(self._regions):
            if self.cached_bytes + size <= self.budget_bytes:
                break
            if index not in self._box:
                del self._regions[index]
        return self.cached_bytes + size <= self.budget_bytes

    def _note_peak(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.cached_bytes)

    # -- reading regions --------------------------------------------------------------------

    def _stamps(self, region: Region) -> tuple[tuple[int, int], ...]:
        files = self.db.region_files(region)
        return (_stamp(files["cpm"]), _stamp(files["cpt"]))

    def _wants_rows(self, region: Region, stamps: tuple[tuple[int, int], ...]) -> bool:
        cached = self._regions.get(region.index)
        if cached is not None and cached.stamps == stamps:
            return isinstance(cached, _RegionIndex)
        if self.mode == "rows":
            return True
        return not self._make_room(WHOLE_FACTOR * self._file_bytes(region))

    def region(self, region: Region, stamps: tuple[tuple[int, int], ...] | None = None) -> _RegionData:
        """The region read whole (kept until it is dropped or rewritten); ``stamps`` its
        files' (mtime, size) when the caller has just read them."""
        stamps = stamps or self._stamps(region)
        data = self._regions.get(region.index)
        if not isinstance(data, _RegionData) or data.stamps != stamps:
            self._regions.pop(region.index, None)
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
            self._note_peak()
        self._regions.move_to_end(region.index)
        return data

    def index(self, region: Region, stamps: tuple[tuple[int, int], ...] | None = None) -> _RegionIndex:
        """The region read by rows: its keys index, built in one pass over the file."""
        stamps = stamps or self._stamps(region)
        data = self._regions.get(region.index)
        if not isinstance(data, _RegionIndex) or data.stamps != stamps:
            self._regions.pop(region.index, None)
            self.reads += 1
            rows = self.db.measurement_rows(region)
            self._make_room(ROWS_BYTES_PER_MEASUREMENT * rows.rows)
            keys = np.empty(rows.rows, dtype=np.int64)
            for start in range(0, rows.rows, WINDOW_ROWS):
                block = rows.read(start, WINDOW_ROWS)
                keys[start : start + len(block)] = (block["IMAGE_ID"].astype(np.int64) << 32) | block[
                    "DET_ID"
                ].astype(np.int64)
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            row_of = order.astype(np.int32 if rows.rows < (1 << 31) else np.int64)
            del order
            data = _RegionIndex(stamps, rows, keys, row_of, self.db.objects(region))
            self._regions[region.index] = data
            self._note_peak()
        self._regions.move_to_end(region.index)
        return data

    def overlapping_box(self, r0: float, r1: float, d0: float, d1: float) -> list[Region]:
        """The regions overlapping a rectangle of the sky (degrees)."""
        return [
            r for r in self.regions() if r.r_min <= r1 and r.r_max >= r0 and r.d_min <= d1 and r.d_max >= d0
        ]

    def overlapping(self, ra: Array, dec: Array) -> list[Region]:
        if len(ra) == 0:
            return []
        r0, r1 = float(np.min(ra)) - MARGIN_DEG, float(np.max(ra)) + MARGIN_DEG
        d0, d1 = float(np.min(dec)) - MARGIN_DEG, float(np.max(dec)) + MARGIN_DEG
        return self.overlapping_box(r0, r1, d0, d1)

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
            todo = np.nonzero(~out.found)[0]
            if len(todo) == 0:
                break
            stamps = self._stamps(region)  # once per look-up: a rewritten file is read again
            if self._wants_rows(region, stamps):
                idx, meas, objects = self._find_rows(self.index(region, stamps), want[todo])
            else:
                idx, meas, objects = self._find_whole(self.region(region, stamps), images, want[todo])
            idx = todo[idx]
            ave = meas["AVE_REF"].astype(np.int64)
            if len(ave) and (ave.min() < 0 or ave.max() >= len(objects)):
                raise DvoError(f"region {region.name}: AVE_REF outside its {len(objects)} objects")
            objs = objects[ave]
            out.found[idx] = True
            out.detect_id[idx] = meas["EXT_ID"]
            out.obj_id[idx] = objs["EXT_ID"]
            out.ipp_obj_id[idx] = (objs["CAT_ID"].astype(np.int64) << 32) + objs["OBJ_ID"]
            out.region[idx] = region.index
            out.m_cal[idx] = meas["M_CAL"]
            out.photcode[idx] = meas["PHOTCODE"]
        return out

    def _find_whole(self, data: _RegionData, images: Array, want: Array) -> tuple[Array, Array, Array]:
        """(positions in ``want`` found, their measurements, the region's objects)."""
        empty = np.zeros(0, dtype=np.int64)
        column = data.image_id
        if len(column) == 0:
            return empty, data.measurements[:0], data.objects
        candidates = np.nonzero(np.isin(column, images, kind="table"))[0]
        if len(candidates) == 0:
            return empty, data.measurements[:0], data.objects
        keys = (column[candidates].astype(np.int64) << 32) | data.det_id[candidates].astype(np.int64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        pos = np.clip(np.searchsorted(keys, want), 0, len(keys) - 1)
        hit = keys[pos] == want
        rows = candidates[order[pos[hit]]]
        return np.nonzero(hit)[0], data.measurements[rows], data.objects

    def _find_rows(self, data: _RegionIndex, want: Array) -> tuple[Array, Array, Array]:
        """The same from the region's key index and only the rows found, read from the file."""
        if len(data.keys) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=_NATIVE_CPM), data.objects
        pos = np.clip(np.searchsorted(data.keys, want), 0, len(data.keys) - 1)
        hit = data.keys[pos] == want
        return np.nonzero(hit)[0], _gather(data.rows, data.row_of[pos[hit]].astype(np.int64)), data.objects


def _gather(rows: RowFile, wanted: Array) -> Array:
    """The file's rows ``wanted`` (in that order), read window by window in file order, so
    memory holds one window and the rows found."""
    out = np.empty(len(wanted), dtype=_NATIVE_CPM)
    order = np.argsort(wanted, kind="stable")
    ordered = wanted[order]
    i = 0
    while i < len(ordered):
        first = int(ordered[i])
        end = int(np.searchsorted(ordered, first + WINDOW_ROWS))
        block = rows.read(first, int(ordered[end - 1]) - first + 1)
        out[order[i:end]] = block[ordered[i:end] - first].astype(_NATIVE_CPM)
        i = end
    return out
