"""The loader's DVO cache within a memory budget (issue 19, point 5; seed 003's policy): whole
regions or rows of the measurement files, the regions of two boxes kept and the rest dropped,
a rewritten region read again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shared.formats import dvo
from shared.psps import dvocache
from shared.psps.dvocache import DvoCache

Array = np.ndarray[Any, Any]
IMAGES = 40


def _region(index: int, ra0: float) -> dvo.Region:
    return dvo.Region(index, dvo.region_name(index, 19.0, 2), ra0, ra0 + 1.0, 19.0, 21.0, 2)


def _write_region(
    db: dvo.DvoDatabase, region: dvo.Region, n: int, rng: np.random.Generator, ext: int = 0
) -> None:
    cpt = dvo.empty(dvo.CPT_COLUMNS, n // 10 + 1)
    cpt["OBJ_ID"] = np.arange(1, len(cpt) + 1)
    cpt["CAT_ID"] = region.index
    cpt["EXT_ID"] = np.arange(len(cpt)) + region.index * 10**9
    cpm = dvo.empty(dvo.CPM_COLUMNS, n)
    cpm["IMAGE_ID"] = rng.integers(1, IMAGES + 1, n)
    cpm["DET_ID"] = rng.permutation(n)  # unique per region, so (IMAGE_ID, DET_ID) is too
    cpm["AVE_REF"] = rng.integers(0, len(cpt), n)
    cpm["EXT_ID"] = np.arange(n) + region.index * 10**12 + ext
    cpm["M_CAL"] = rng.uniform(-0.1, 0.1, n)
    cpm["PHOTCODE"] = 10101
    files = db.region_files(region)
    files["cpm"].parent.mkdir(parents=True, exist_ok=True)
    dvo.write_atomic(files["cpt"], dvo.table_bytes(dvo.CPT_COLUMNS, cpt))
    dvo.write_atomic(files["cpm"], dvo.table_bytes(dvo.CPM_COLUMNS, cpm))


def _database(root: Path, sizes: list[int]) -> list[dvo.Region]:
    """Regions side by side in RA (9..10, 10..11, ...), each with ``sizes[i]`` measurements."""
    rng = np.random.default_rng(3)
    db = dvo.DvoDatabase(root)
    root.mkdir(parents=True, exist_ok=True)
    images = dvo.empty(dvo.IMAGES_COLUMNS, IMAGES)
    images["IMAGE_ID"] = np.arange(1, IMAGES + 1)
    images["EXTERN_ID"] = images["IMAGE_ID"] + 1000
    dvo.write_atomic(db.path("Images.dat"), dvo.table_bytes(dvo.IMAGES_COLUMNS, images))
    regions = [_region(i + 1, 9.0 + i) for i in range(len(sizes))]
    sky = dvo.empty(dvo.SKYTABLE_COLUMNS, len(regions))
    for i, r in enumerate(regions):
        sky[i] = (r.r_min, r.r_max, r.d_min, r.d_max, r.index, r.depth, 1, r.name)
        _write_region(db, r, sizes[i], rng)
    dvo.write_atomic(db.path("SkyTable.fits"), dvo.table_bytes(dvo.SKYTABLE_COLUMNS, sky))
    return regions


def _wanted(root: Path, region: dvo.Region, images: list[int]) -> tuple[Array, Array, Array, Array]:
    """Every measurement of ``images`` in the region, plus as many that DVO does not hold."""
    meas = dvo.DvoDatabase(root).measurements(region)
    mine = meas[np.isin(meas["IMAGE_ID"], images)]
    n = len(mine)
    image_id = np.concatenate([mine["IMAGE_ID"], np.full(n, images[0])]).astype(np.int64)
    det_id = np.concatenate([mine["DET_ID"], np.arange(n) + 10**8]).astype(np.int64)
    ra = np.full(2 * n, (region.r_min + region.r_max) / 2)
    dec = np.full(2 * n, 20.0)
    return image_id, det_id, ra, dec


def test_rows_mode_finds_exactly_what_whole_regions_find_and_holds_far_less(tmp_path):
    regions = _database(tmp_path, [200_000])
    wanted = _wanted(tmp_path, regions[0], [3, 7, 11])
    whole = DvoCache(tmp_path)
    assert whole.enter_box(regions, smfs=5).mode == "whole"
    rows = DvoCache(tmp_path, budget_bytes=4 << 20)  # 4 MiB: the region's files are 14 MB
    plan = rows.enter_box(regions, smfs=5)
    assert (plan.mode, plan.regions, plan.smfs) == ("rows", 1, 5)
    assert plan.bytes_per_smf == plan.dvo_bytes // 5
    a, b = whole.find(*wanted), rows.find(*wanted)
    half = len(wanted[0]) // 2
    assert a.found[:half].all() and not a.found[half:].any()
    for name in ("found", "detect_id", "obj_id", "ipp_obj_id", "region", "m_cal", "photcode"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # the index keeps 12 bytes a measurement (and the objects, 44 bytes each), the whole
    # region its rows and its key columns
    objects = 200_000 // 10 + 1
    assert rows.peak_bytes <= dvocache.ROWS_BYTES_PER_MEASUREMENT * 200_000 + 44 * objects
    assert whole.peak_bytes > 4 * rows.peak_bytes


def test_one_smf_over_a_large_region_reads_rows_and_several_read_it_whole(tmp_path):
    """The seed's ratio: reading a whole region pays off only when the box's smfs share it."""
    regions = _database(tmp_path, [200_000])
    budget = 64 << 20
    assert DvoCache(tmp_path, budget).enter_box(regions, smfs=1).mode == "rows"
    assert DvoCache(tmp_path, budget).enter_box(regions, smfs=30).mode == "whole"
    small = _database(tmp_path / "small", [2_000])
    assert DvoCache(tmp_path / "small", budget).enter_box(small, smfs=1).mode == "whole"


def test_moving_to_the_next_box_keeps_the_regions_both_overlap_and_drops_the_rest(tmp_path):
    a, b, c = _database(tmp_path, [20_000, 20_000, 20_000])
    cache = DvoCache(tmp_path)
    cache.enter_box([a, b], smfs=4)
    for region in (a, b):
        cache.find(*_wanted(tmp_path, region, [5]))
    reads = cache.reads
    plan = cache.enter_box([b, c], smfs=4)
    assert (plan.kept, plan.dropped) == (1, 1)
    cache.find(*_wanted(tmp_path, b, [5]))
    assert cache.reads == reads  # b was kept, not read again
    cache.find(*_wanted(tmp_path, c, [5]))
    assert cache.reads == reads + 1


def test_a_region_that_does_not_fit_beside_the_others_is_read_by_rows(tmp_path):
    a, b = _database(tmp_path, [20_000, 60_000])
    size_a = sum(p.stat().st_size for k, p in dvo.DvoDatabase(tmp_path).region_files(a).items() if k != "cps")
    cache = DvoCache(tmp_path, budget_bytes=int(dvocache.WHOLE_FACTOR * size_a * 1.5))
    assert cache.enter_box([a], smfs=4).mode == "whole"
    cache.find(*_wanted(tmp_path, a, [2]))  # then a detection near the box's edge needs b
    found = cache.find(*_wanted(tmp_path, b, [2]))
    assert found.found.any()
    assert cache.cached_bytes <= cache.budget_bytes
    kinds = {type(d).__name__ for d in cache._regions.values()}
    assert kinds == {"_RegionData", "_RegionIndex"}


def test_a_region_rewritten_while_loading_is_read_again_by_rows(tmp_path):
    (region,) = _database(tmp_path, [30_000])
    cache = DvoCache(tmp_path, budget_bytes=1 << 20)
    cache.enter_box([region], smfs=3)
    wanted = _wanted(tmp_path, region, [4])
    before = cache.find(*wanted).detect_id.copy()
    reads = cache.reads
    assert cache.find(*wanted).found.any() and cache.reads == reads  # unchanged: not read again
    _write_region(dvo.DvoDatabase(tmp_path), region, 30_000, np.random.default_rng(3), ext=7)
    after = cache.find(*_wanted(tmp_path, region, [4]))
    assert after.found.sum() and not np.array_equal(before[after.found], after.detect_id[after.found])
    assert cache.reads == reads + 1
