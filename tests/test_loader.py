"""The PSPS loader on a generated survey: queue, IN batch, P2 batches with DVO ids, the
output read by outside tools, and bad input failing one batch without touching the others."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from shared.core.errors import DbError
from shared.core.settings import parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import PROCESSING, drop_database
from shared.formats import catalogs, dvo
from shared.processing.filerules import rule
from shared.psps.schema import batch_tables
from shared.storage.store import Storage
from tests.helpers import ROOT, AgentProcess, agent_env
from tests.survey_fixture import (
    SurveySite,
    configure_loading,
    copy_survey,
    drop_survey,
    ippctl,
    sibling,
    survey_site,
    survey_template,
)

_numbers = itertools.count()


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for survey in survey_site(test_dsn, f"ld{next(_numbers)}", tmp_path, exposures=3, chips=3, seed=21):
        yield survey


async def load(site: SurveySite, tmp_path: Path, *args: str) -> AgentProcess:
    proc = AgentProcess("loader", site.dsn, tmp_path, "--once", *args, var_dir=str(site.var_dir))
    assert await proc.wait(timeout_s=180) == 0, proc.output()
    return proc


BATCHES = Query(
    "t_b",
    "SELECT name, type, item_id, processed, loaded_to_datastore, detections, "
    "fits_path, fileset, note FROM psps_batch ORDER BY batch_id",
    "test",
)


async def test_p2_batches_are_built_with_dvo_ids_and_published(site, sdb, tmp_path):
    configure_loading(site, "demo")
    init = ippctl(site, "psps", "init", "demo")
    assert init.returncode == 0 and "IN batch B00000001" in init.stdout, init.stderr
    again = ippctl(site, "psps", "init", "demo")
    assert "published already" in again.stdout
    queued = ippctl(site, "psps", "queue", "demo")
    assert queued.returncode == 0 and "P2 3" in queued.stdout, queued.stdout + queued.stderr
    assert "nothing new" in ippctl(site, "psps", "queue", "demo").stdout  # idempotent
    proc = await load(site, tmp_path, "--config", "demo")
    rows = await sdb.fetch_all(BATCHES)
    assert [(r["type"], r["processed"], r["loaded_to_datastore"]) for r in rows] == [
        ("IN", "succeeded", "succeeded")
    ] + [("P2", "succeeded", "succeeded")] * 3
    assert [r["name"] for r in rows] == ["B00000001", "B00000002", "B00000003", "B00000004"]
    assert len(proc.events("batch_published")) == 3
    p2 = rows[1]
    # the FITS file has the VOTable's tables and columns, in order
    with fits.open(p2["fits_path"]) as hdus:
        assert [h.name for h in hdus[1:]] == ["FRAMEMETA", "IMAGEMETA", "DETECTION"]
        for hdu, table in zip(hdus[1:], batch_tables("P2"), strict=True):
            assert list(hdu.columns.names) == [c.name for c in table.columns]
        det = hdus["DETECTION"].data
        assert len(det) == p2["detections"] > 0
        assert len(hdus["IMAGEMETA"].data) == 3
    # every detection carries the DVO ids of its measurement
    cat = dvo.DvoDatabase(site.dvo_dir)
    detect_ids, obj_ids = set(), set()
    for region in cat.regions():
        detect_ids |= set(cat.measurements(region)["EXT_ID"].tolist())
        obj_ids |= set(cat.objects(region)["EXT_ID"].tolist())
    assert set(det["detectID"].tolist()) <= detect_ids
    assert set(det["objID"].tolist()) <= obj_ids
    assert len(set(zip(det["objID"].tolist(), det["detectID"].tolist(), strict=True))) == len(det)
    assert np.all(det["psfFlux"][det["psfFlux"] != -999] > 0)
    # published: the FITS file and the manifest are a fileset of the product
    manifest = json.loads(Path(p2["fits_path"]).with_name(f"{p2['name']}.manifest.json").read_text())
    assert manifest["batch"] == p2["name"] and manifest["tables"][2] == {
        "name": "Detection",
        "rows": p2["detections"],
    }
    listing = ippctl(site, "ds", "ls", "PSPS_demo", p2["name"])
    assert f"{p2['name']}.fits" in listing.stdout and "manifest" in listing.stdout
    shown = ippctl(site, "psps", "batches", "demo", "--type", "P2")
    assert shown.returncode == 0 and shown.stdout.count("succeeded") == 6


@pytest.mark.skipif(shutil.which("fitsverify") is None, reason="fitsverify not installed")
async def test_fitsverify_finds_no_errors_in_batches_of_every_type(site, sdb, tmp_path):
    configure_loading(site, "demo", "batch_types=P2,ST,OB")
    assert ippctl(site, "psps", "init", "demo").returncode == 0
    ippctl(site, "psps", "queue", "demo")
    await load(site, tmp_path, "--config", "demo")
    rows = await sdb.fetch_all(BATCHES)
    assert {r["type"] for r in rows} == {"IN", "P2", "ST", "OB"}
    for row in rows:
        out = subprocess.run(
            ["fitsverify", "-q", "-e", row["fits_path"]], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0 and "verification OK" in out.stdout, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("stilts") is None, reason="STILTS not installed")
async def test_stilts_reads_every_table_with_the_votable_columns(site, sdb, tmp_path):
    configure_loading(site, "demo")
    ippctl(site, "psps", "queue", "demo")
    await load(site, tmp_path, "--config", "demo")
    path = (await sdb.fetch_all(BATCHES))[0]["fits_path"]
    for number, table in enumerate(batch_tables("P2"), start=1):
        out = subprocess.run(
            ["stilts", "tpipe", f"in={path}#{number}", "omode=meta"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        for column in table.columns:
            assert column.name in out.stdout, (table.name, column.name)


# -- bad input -------------------------------------------------------------------------------


async def _smf_path(sdb: Database, cam_id: int) -> Path:
    base = await sdb.fetch_val(
        Query("t_pb", "SELECT path_base FROM camProcessedExp WHERE cam_id = %(id)s", "test"), id=cam_id
    )
    return await Storage(sdb).locate(rule("camera", "PSASTRO.OUTPUT").filename(base))


async def test_a_config_that_does_not_publish_builds_each_item_once_whatever_the_queue(site, sdb, tmp_path):
    """Issue 29: with datastore_publish=0 each `ippctl psps queue` requeued the built but
    unpublished items and the loaders built them again under new batch numbers. A built batch
    is the item's batch when the config does not publish (seed 003: datastore_publish "publish
    batches (no: build them only)")."""
    configure_loading(site, "nopub", "datastore_publish=0")
    assert "P2 3" in ippctl(site, "psps", "queue", "nopub").stdout
    await load(site, tmp_path, "--config", "nopub")
    built = [r for r in await sdb.fetch_all(BATCHES) if r["type"] == "P2"]
    assert [(r["processed"], r["loaded_to_datastore"]) for r in built] == [("succeeded", "pending")] * 3
    again = ippctl(site, "psps", "queue", "nopub")
    assert again.returncode == 0 and "nothing new" in again.stdout, again.stdout
    proc = await load(site, tmp_path, "--config", "nopub")
    assert not proc.events("batch_published")
    assert len([r for r in await sdb.fetch_all(BATCHES) if r["type"] == "P2"]) == 3


async def test_a_corrupt_smf_fails_its_batch_and_the_others_are_published(site, sdb, tmp_path):
    configure_loading(site, "demo")
    smf = await _smf_path(sdb, 2)
    smf.write_bytes(smf.read_bytes()[:5000])
    ippctl(site, "psps", "queue", "demo")
    proc = await load(site, tmp_path, "--config", "demo")
    rows = {r["item_id"]: r for r in await sdb.fetch_all(BATCHES)}
    assert rows[2]["processed"] == "failed" and "camRun 2" in rows[2]["note"]
    assert rows[2]["fileset"] is None and rows[2]["loaded_to_datastore"] == "pending"
    assert rows[1]["processed"] == rows[3]["processed"] == "succeeded"
    assert proc.events("batch_failed")[0]["item"] == 2
    item = await sdb.fetch_one(
        Query("t_i", "SELECT state, attempts, note FROM psps_item WHERE item_id = 2", "test")
    )
    assert item["state"] == "failed" and item["attempts"] == 1
    published = ippctl(site, "ds", "ls", "PSPS_demo").stdout
    assert rows[1]["name"] in published and rows[2]["name"] not in published


async def test_detections_missing_from_dvo_fail_the_batch_with_the_count(site, sdb, tmp_path):
    configure_loading(site, "demo")
    cat = dvo.DvoDatabase(site.dvo_dir)
    for region in cat.regions():  # empty every region's measurements
        files = cat.region_files(region)
        _header, rows = dvo.read_table(files["cpm"], dvo.CPM_COLUMNS)
        dvo.write_atomic(files["cpm"], dvo.table_bytes(dvo.CPM_COLUMNS, rows[:0]))
    ippctl(site, "psps", "queue", "demo")
    await load(site, tmp_path, "--config", "demo")
    notes = [r["note"] for r in await sdb.fetch_all(BATCHES)]
    assert all("detections not found in DVO" in n for n in notes), notes


async def test_an_imageid_absent_from_images_dat_fails_the_batch(site, sdb, tmp_path):
    configure_loading(site, "demo")
    cat = dvo.DvoDatabase(site.dvo_dir)
    _, images = dvo.read_table(cat.path("Images.dat"), dvo.IMAGES_COLUMNS)
    dvo.write_atomic(cat.path("Images.dat"), dvo.table_bytes(dvo.IMAGES_COLUMNS, images[:0]))
    ippctl(site, "psps", "queue", "demo")
    await load(site, tmp_path, "--config", "demo")
    notes = [r["note"] for r in await sdb.fetch_all(BATCHES)]
    assert notes and all("is not in Images.dat" in n for n in notes), notes


async def test_test_mode_loads_the_first_exposure_one_chip(site, sdb, tmp_path):
    configure_loading(site, "quick", "test_mode=yes")
    ippctl(site, "psps", "queue", "quick")
    await load(site, tmp_path, "--config", "quick")
    rows = await sdb.fetch_all(BATCHES)
    assert len(rows) == 1 and rows[0]["processed"] == "succeeded"
    with fits.open(rows[0]["fits_path"]) as hdus:
        assert len(hdus["IMAGEMETA"].data) == 1


async def test_loader_test_flag_loads_the_first_exposure_s_ota_33_and_lists_what_it_ignored(
    site, sdb, tmp_path
):
    """Seed 003's test mode: "it will only process the first exposure that is queued; it will
    only process OTA 33 from this exposure; it will ignore certain missing values, which would
    otherwise fail the batch". Here XY33 of the first exposure lacks AIRMASS and a DVO that
    lost its measurements misses every detection: the batch is built anyway and the log line
    lists both."""
    configure_loading(site, "t")
    ippctl(site, "psps", "queue", "t")
    first = await sdb.fetch_val(
        Query(
            "t_first",
            "SELECT item_id FROM psps_item WHERE config = 't' AND type = 'P2' ORDER BY item_key LIMIT 1",
            "test",
        )
    )
    smf = await _smf_path(sdb, int(first))
    with fits.open(smf) as hdus:
        for hdu in hdus:
            if hdu.name.startswith("XY33") and "AIRMASS" in hdu.header:
                del hdu.header["AIRMASS"]
        hdus.writeto(smf, overwrite=True)
    cat = dvo.DvoDatabase(site.dvo_dir)
    for region in cat.regions():
        files = cat.region_files(region)
        _header, rows = dvo.read_table(files["cpm"], dvo.CPM_COLUMNS)
        dvo.write_atomic(files["cpm"], dvo.table_bytes(dvo.CPM_COLUMNS, rows[:0]))
    items = Query(
        "t_items", "SELECT item_id, state, attempts, batch_id FROM psps_item WHERE config = 't'", "test"
    )
    queued = await sdb.fetch_all(items)
    proc = await load(site, tmp_path, "--config", "t", "--test")
    (built,) = proc.events("test_batch_built")
    assert built["item"] == first
    with fits.open(built["fits"]) as hdus:
        assert list(hdus["IMAGEMETA"].data["ccdID"]) == [33]
    ignored = " ".join(built["ignored"])
    assert "XY33: AIRMASS missing" in ignored and "detections not in DVO (ignored)" in ignored
    assert proc.events("agent_stopped")[0]["reason"].startswith("--test: the first queued exposure was built")
    # issue 29: a trial uses up nothing: no batch recorded or published (the config's product
    # is production's), every item queued as it was, the first one included
    assert await sdb.fetch_all(BATCHES) == [] and not proc.events("batch_published")
    assert await sdb.fetch_all(items) == queued and {r["state"] for r in queued} == {"new"}
    on_product = Query(
        "t_on_product",
        "SELECT COUNT(*) FROM dsFileset f JOIN dsProduct p ON p.prod_id = f.prod_id "
        "WHERE p.prod_name = 'PSPS_t'",
        "test",
    )
    assert await sdb.fetch_val(on_product) == 0
    # without --test the same input fails its batches, the first exposure's too (its AIRMASS)
    again = await load(site, tmp_path, "--config", "t")
    notes = [r["note"] for r in await sdb.fetch_all(BATCHES)]
    assert len(notes) == len(queued) and "header lacks AIRMASS" in notes[0], notes
    assert all("detections not found in DVO" in n for n in notes[1:]), notes
    assert not again.events("batch_published")


async def test_a_detection_repeated_in_the_smf_is_discarded_counted_and_the_batch_published(
    site, sdb, tmp_path
):
    """Seed 003: rows are copied into the PSPS tables "discarding duplicates where
    necessary": the repeats go (the first kept), the count is on the batch and in its log
    line, and the batch is published."""
    configure_loading(site, "dup")
    smf = await _smf_path(sdb, 1)
    with fits.open(smf) as hdus:
        psf = next(i for i, h in enumerate(hdus) if h.name.endswith(".PSF"))
        table = hdus[psf]
        original = len(table.data)
        longer = fits.BinTableHDU.from_columns(table.columns, nrows=original + 3, header=table.header)
        for column in table.columns.names:  # the first three rows once more at the end
            longer.data[column][original:] = table.data[column][:3]
        hdus[psf] = longer
        hdus.writeto(smf, overwrite=True)
    ippctl(site, "psps", "queue", "dup")
    proc = await load(site, tmp_path, "--config", "dup")
    rows = {r["item_id"]: r for r in await sdb.fetch_all(DUPLICATES)}
    assert rows[1]["processed"] == "succeeded" and rows[1]["duplicates"] == 3, [
        e["reason"] for e in proc.events("batch_failed")
    ]
    assert rows[2]["duplicates"] == 0
    event = next(e for e in proc.events("batch_published") if e["item"] == 1)
    assert event["duplicates"] == 3 and event["detections"] == rows[1]["detections"]
    with fits.open(rows[1]["fits_path"]) as hdus:
        det = hdus["DETECTION"].data
        assert len(det) == rows[1]["detections"] and len(
            set(zip(det["objID"], det["detectID"], strict=True))
        ) == len(det)
        first_chip = det[det["imageID"] == det["imageID"][0]]
    assert len(first_chip) == original  # every one of that chip's detections, once


DUPLICATES = Query(
    "t_dup", "SELECT item_id, processed, detections, duplicates, fits_path FROM psps_batch", "test"
)


async def test_a_loader_over_budget_reads_dvo_by_rows_and_builds_the_same_batches(site, sdb, tmp_path):
    """Within a DVO budget the regions do not fit, the loader says so per box (``dvo_box``,
    mode rows) and finds every id as it does with whole regions."""
    for name in ("whole", "rows"):
        configure_loading(site, name, "batch_types=P2,ST")
        ippctl(site, "psps", "queue", name)
    whole = await load(site, tmp_path, "--config", "whole")
    rows = AgentProcess(
        "loader", site.dsn, tmp_path, "--once", "--config", "rows",
        var_dir=str(site.var_dir), dvo_cache_max_bytes=100_000,
    )  # fmt: skip
    assert await rows.wait(timeout_s=180) == 0, rows.output()
    assert {e["mode"] for e in whole.events("dvo_box")} == {"whole"}
    boxes = rows.events("dvo_box")
    assert boxes and {e["mode"] for e in boxes} == {"rows"} and all(e["dvo_bytes"] > 0 for e in boxes)
    batches = await sdb.fetch_all(
        Query("t_cfg", "SELECT config, type, item_id, fits_path, processed FROM psps_batch", "test")
    )
    assert batches and all(b["processed"] == "succeeded" for b in batches)
    by = {(b["config"], b["type"], b["item_id"]): b["fits_path"] for b in batches}
    for (config, kind, item), path in by.items():
        if config != "whole":
            continue
        table = "DETECTION" if kind == "P2" else "STACKDETECTION"
        with fits.open(path) as a, fits.open(by[("rows", kind, item)]) as b:
            assert np.array_equal(a[table].data["objID"], b[table].data["objID"])
            assert np.array_equal(a[table].data["ippObjID"], b[table].data["ippObjID"])


async def test_a_dvo_region_file_gone_fails_the_batches_that_need_it_and_the_loader_goes_on(
    site, sdb, tmp_path
):
    configure_loading(site, "gone")
    cat = dvo.DvoDatabase(site.dvo_dir)
    for region in cat.regions():
        cat.region_files(region)["cpm"].unlink()
    ippctl(site, "psps", "queue", "gone")
    proc = await load(site, tmp_path, "--config", "gone")  # exits 0: nothing crashed
    notes = [r["note"] for r in await sdb.fetch_all(BATCHES)]
    assert notes and all(".cpm" in n for n in notes), notes
    assert proc.events("dvo_box_failed") and not proc.events("agent_crashed")


async def test_two_loaders_on_one_config_never_build_the_same_batch(site, sdb, tmp_path):
    configure_loading(site, "demo")
    ippctl(site, "psps", "queue", "demo")
    # generous staleness: on a loaded machine the FAST 2 s would declare a busy loader dead
    relaxed: dict[str, Any] = {"var_dir": str(site.var_dir), "heartbeat_grace_s": 10, "client_stale_s": 20}
    a = AgentProcess("loader", site.dsn, tmp_path, "--once", "--config", "demo", **relaxed)
    b = AgentProcess("loader", site.dsn, tmp_path, "--once", "--config", "demo", **relaxed)
    codes = (await a.wait(timeout_s=180), await b.wait(timeout_s=180))
    assert codes == (0, 0), a.output()[-3000:] + b.output()[-3000:]
    rows = await sdb.fetch_all(BATCHES)
    assert sorted(r["item_id"] for r in rows) == [1, 2, 3]
    assert all(r["processed"] == "succeeded" for r in rows), [r["note"] for r in rows]


def test_smf_reader_is_the_one_the_loader_uses():
    """The loader reads smf files through shared.formats.catalogs (one reader for all agents)."""
    assert catalogs.read_smf.__module__ == "shared.formats.catalogs"


async def test_st_and_ob_batches_are_built_from_stack_cmfs_and_dvo_regions(site, sdb, tmp_path):
    configure_loading(site, "sky", "batch_types=ST,OB")
    queued = ippctl(site, "psps", "queue", "sky")
    assert "ST " in queued.stdout and "OB " in queued.stdout, queued.stdout
    await load(site, tmp_path, "--config", "sky")
    rows = await sdb.fetch_all(BATCHES)
    assert rows and all(r["processed"] == "succeeded" for r in rows), [r["note"] for r in rows]
    kinds = {r["type"] for r in rows}
    assert kinds == {"ST", "OB"}
    st = next(r for r in rows if r["type"] == "ST")
    with fits.open(st["fits_path"]) as hdus:
        assert [h.name for h in hdus[1:]] == ["STACKMETA", "STACKDETECTION", "STACKTOIMAGE"]
        assert len(hdus["STACKDETECTION"].data) == st["detections"]
        assert hdus["STACKMETA"].data["stackImageID"][0] == st["item_id"]
        assert len(hdus["STACKTOIMAGE"].data) >= 2
    ob = next(r for r in rows if r["type"] == "OB")
    region = next(r for r in dvo.DvoDatabase(site.dvo_dir).regions() if r.index == ob["item_id"])
    objects = dvo.DvoDatabase(site.dvo_dir).objects(region)
    with fits.open(ob["fits_path"]) as hdus:
        thin = hdus["OBJECTTHIN"].data
        assert sorted(thin["objID"].tolist()) == sorted(objects["EXT_ID"].tolist())
        assert set(hdus["MEANOBJECT"].data["filterID"].tolist()) <= {1, 2, 3, 4, 5}


async def test_st_items_come_from_addrun_and_their_detections_get_dvo_ids(site, sdb, tmp_path):
    """Seed 003: ST items are the stacks addRun lists as merged into the DVO database in use;
    their detections get objID, ippObjID and the detection id from DVO through the cmf's
    IMAGEID (an Images.dat EXTERN_ID), as P2 detections do."""
    merged = await sdb.fetch_all(
        Query("t_add", "SELECT stage_id FROM addRun WHERE stage = 'stack' ORDER BY stage_id", "test")
    )
    assert len(merged) >= 2
    dropped = int(merged[0]["stage_id"])  # no longer merged: not to be loaded
    await sdb.execute(
        Query("t_drop", "DELETE FROM addRun WHERE stage = 'stack' AND stage_id = %(id)s", "test"), id=dropped
    )
    configure_loading(site, "st", "batch_types=ST")
    ippctl(site, "psps", "queue", "st")
    await load(site, tmp_path, "--config", "st")
    rows = await sdb.fetch_all(BATCHES)
    assert {r["item_id"] for r in rows} == {int(m["stage_id"]) for m in merged[1:]}
    assert all(r["processed"] == "succeeded" for r in rows), [r["note"] for r in rows]
    cat = dvo.DvoDatabase(site.dvo_dir)
    objects = {}
    for region in cat.regions():
        if cat.region_files(region)["cpt"].exists():
            for o in cat.objects(region):
                objects[int(o["EXT_ID"])] = (int(o["CAT_ID"]) << 32) + int(o["OBJ_ID"])
    for row in rows:
        base = await sdb.fetch_val(
            Query("t_sb", "SELECT path_base FROM stackSumSkyfile WHERE stack_id = %(id)s", "test"),
            id=row["item_id"],
        )
        header, table = catalogs.read_cmf(
            await Storage(sdb).locate(rule("stack", "PPSTACK.SOURCES").filename(base))
        )
        with fits.open(row["fits_path"]) as hdus:
            det = hdus["STACKDETECTION"].data
        assert len(det) == len(table) > 0
        assert all(objects[int(o)] == int(i) for o, i in zip(det["objID"], det["ippObjID"], strict=True))
        extern = int(header["IMAGEID"])
        want = (35 << 56) + (extern << 28) + np.asarray(table["IPP_IDET"], dtype=np.int64)
        assert sorted(det["stackDetectID"].tolist()) == sorted(want.tolist())


async def test_a_stack_not_merged_into_dvo_fails_its_st_batch(site, sdb, tmp_path):
    configure_loading(site, "stx", "batch_types=ST")
    cat = dvo.DvoDatabase(site.dvo_dir)
    _, images = dvo.read_table(cat.path("Images.dat"), dvo.IMAGES_COLUMNS)
    kept = images[images["CCDNUM"] != 0]  # every stack image gone: its IMAGEID is unknown
    dvo.write_atomic(cat.path("Images.dat"), dvo.table_bytes(dvo.IMAGES_COLUMNS, kept))
    ippctl(site, "psps", "queue", "stx")
    await load(site, tmp_path, "--config", "stx")
    notes = [r["note"] for r in await sdb.fetch_all(BATCHES)]
    assert notes and all("is not in Images.dat" in n for n in notes), notes


async def test_a_dvo_region_replaced_while_loading_is_read_again(site, sdb):
    """The cache keeps a region until its file changes; a rewritten region is read again and
    its new ids are used, an unchanged one is never read twice."""
    from shared.psps.dvocache import DvoCache

    cache = DvoCache(site.dvo_dir)
    region = cache.regions()[0]
    meas = cache.db.measurements(region)
    first = cache.find(meas["IMAGE_ID"], meas["DET_ID"], meas["RA"], meas["DEC"])
    assert first.found.all()
    reads = cache.reads
    again = cache.find(meas["IMAGE_ID"], meas["DET_ID"], meas["RA"], meas["DEC"])
    assert cache.reads == reads and np.array_equal(again.detect_id, first.detect_id)
    files = cache.db.region_files(region)
    _header, rows = dvo.read_table(files["cpm"], dvo.CPM_COLUMNS)
    rows["EXT_ID"] += 1
    dvo.write_atomic(files["cpm"], dvo.table_bytes(dvo.CPM_COLUMNS, rows))
    os_stat = files["cpm"].stat()
    import os

    os.utime(files["cpm"], ns=(os_stat.st_atime_ns, os_stat.st_mtime_ns + 1_000_000))
    replaced = cache.find(meas["IMAGE_ID"], meas["DET_ID"], meas["RA"], meas["DEC"])
    assert cache.reads > reads
    assert np.array_equal(replaced.detect_id, first.detect_id + 1)


async def test_a_chip_missing_its_table_fails_the_batch(site, sdb, tmp_path):
    configure_loading(site, "demo")
    smf = await _smf_path(sdb, 1)
    with fits.open(smf) as hdus:
        kept = fits.HDUList([h.copy() for h in hdus if not h.name.endswith(".PSF") or h.name != hdus[2].name])
        kept.writeto(smf, overwrite=True)
    ippctl(site, "psps", "queue", "demo")
    await load(site, tmp_path, "--config", "demo")
    rows = {r["item_id"]: r for r in await sdb.fetch_all(BATCHES)}
    assert rows[1]["processed"] == "failed" and "camRun 1" in rows[1]["note"]
    assert rows[2]["processed"] == "succeeded"


async def test_a_corrupt_stack_cmf_fails_its_st_batch(site, sdb, tmp_path):
    configure_loading(site, "st", "batch_types=ST")
    base = await sdb.fetch_val(
        Query("t_sb", "SELECT path_base FROM stackSumSkyfile WHERE stack_id = 1", "test")
    )
    path = await Storage(sdb).locate(rule("stack", "PPSTACK.SOURCES").filename(base))
    path.write_bytes(b"SIMPLE  = not a fits file")
    ippctl(site, "psps", "queue", "st")
    await load(site, tmp_path, "--config", "st")
    rows = {r["item_id"]: r for r in await sdb.fetch_all(BATCHES)}
    assert rows[1]["processed"] == "failed" and "stackRun 1" in rows[1]["note"]
    assert any(r["processed"] == "succeeded" for k, r in rows.items() if k != 1)


FAIL_ITEMS = Query(
    "t_fail_items", "UPDATE psps_item SET state = 'failed', attempts = 3 WHERE config = %(config)s", "test"
)
ITEM_STATES = Query(
    "t_item_states",
    "SELECT state, COUNT(*) AS n FROM psps_item WHERE config = %(config)s GROUP BY state",
    "test",
)


async def test_the_queue_retries_failed_items_up_to_the_psps_max_attempts_setting(site, sdb):
    """The queue and the ODM poller obey one setting: with three attempts used, the default
    (3) leaves the items failed, psps_max_attempts=5 queues them again."""
    configure_loading(site, "demo")
    assert ippctl(site, "psps", "queue", "demo").returncode == 0
    await sdb.execute(FAIL_ITEMS, config="demo")
    assert ippctl(site, "psps", "queue", "demo").returncode == 0
    states = {r["state"]: int(r["n"]) for r in await sdb.fetch_all(ITEM_STATES, config="demo")}
    assert states == {"failed": 3}
    assert ippctl(site, "psps", "queue", "demo", psps_max_attempts="5").returncode == 0
    states = {r["state"]: int(r["n"]) for r in await sdb.fetch_all(ITEM_STATES, config="demo")}
    assert states == {"new": 3}


TABLE = Query(
    "t_table",
    "SELECT COUNT(*) FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name = %(name)s",
    "test",
)
FLAGS = Query("t_flags", "SELECT COUNT(*) FROM agent_control WHERE agent = 'loader'", "test")
LOADER_CLIENTS = Query("t_lc", "SELECT COUNT(*) FROM clients WHERE agent = 'loader'", "test")
FILESETS = Query(
    "t_fs",
    "SELECT s.fileset_name FROM dsFileset s JOIN dsProduct p ON p.prod_id = s.prod_id "
    "WHERE p.type = 'IPP-PSPS' ORDER BY s.fileset_name",
    "test",
)
UNLOAD = Query(
    "t_unload",
    "UPDATE psps_batch SET loaded_to_datastore = 'pending', loaded_to_datastore_at = NULL "
    "WHERE name = %(name)s",
    "test",
)
REQUEUE = Query(
    "t_requeue",
    "UPDATE psps_item i JOIN psps_batch b ON b.batch_id = i.batch_id SET i.state = 'new' "
    "WHERE b.name = %(name)s",
    "test",
)


@pytest.fixture
async def separate(test_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[SurveySite, Database]]:
    """A survey whose processing database holds only the processing tables, and an
    ippToPsps database beside it (made by ippctl db upgrade)."""
    template = await survey_template(test_dsn, exposures=3, chips=3, seed=21)
    n = next(_numbers)
    site = await copy_survey(template, test_dsn, f"ld{n}", tmp_path / "var", frozenset({PROCESSING}))
    i2p_dsn = sibling(test_dsn, f"ld{n}_i2p")
    up = ippctl(site, "db", "upgrade", ipptopsps_dsn=i2p_dsn)
    assert up.returncode == 0 and "ipptopsps tables" in up.stdout, up.stdout + up.stderr
    i2p = await Database.connect(site.settings, i2p_dsn)
    try:
        yield site, i2p
    finally:
        await i2p.close()
        await drop_database(site.settings, parse_dsn(i2p_dsn))
        await drop_survey(site)


async def test_the_loading_side_keeps_its_tables_in_the_ipptopsps_database(separate, tmp_path):
    """Issue 29, point 5. Seed 003: "ippToPsps uses two MySQL databases, a scratch database ...
    and the ippToPsps database, which keeps track of which batches have been processed,
    published to PSPS etc."; "All ippToPsps programs register with the ippToPsps database upon
    start-up, adding a row in the clients table"; "certain ippToPsps programs also access the
    IPP gpc1 database". The processing database gets none of the loader's tables; the loader
    reads it and publishes its batches on its DataStore."""
    site, i2p = separate
    on = {"ipptopsps_dsn": i2p.dsn.url()}
    proc_db = await Database.connect(site.settings, site.dsn)
    try:
        assert await proc_db.fetch_val(TABLE, name="psps_batch") == 0
        assert await proc_db.fetch_val(TABLE, name="camRun") == 1
        assert await i2p.fetch_val(TABLE, name="psps_batch") == 1
        assert await i2p.fetch_val(TABLE, name="camRun") == 0
        assert await i2p.fetch_val(TABLE, name="clients") == 1
        configure_loading(site, "demo", **on)
        assert ippctl(site, "psps", "init", "demo", **on).returncode == 0
        queued = ippctl(site, "psps", "queue", "demo", **on)
        assert queued.returncode == 0 and "P2 3" in queued.stdout, queued.stdout + queued.stderr
        proc = AgentProcess(
            "loader", site.dsn, tmp_path, "--once", "--config", "demo", var_dir=str(site.var_dir), **on
        )
        assert await proc.wait(timeout_s=180) == 0, proc.output()
        rows = await i2p.fetch_all(BATCHES)
        assert [(r["type"], r["processed"], r["loaded_to_datastore"]) for r in rows] == [
            ("IN", "succeeded", "succeeded")
        ] + [("P2", "succeeded", "succeeded")] * 3
        # the filesets are on the processing site's DataStore; the loader registered in ippToPsps
        assert [r["fileset_name"] for r in await proc_db.fetch_all(FILESETS)] == [r["name"] for r in rows]
        assert await i2p.fetch_val(LOADER_CLIENTS) == 1
        assert await proc_db.fetch_val(LOADER_CLIENTS) == 0
        # operators see and hold the loading side's clients with the same commands
        listed = ippctl(site, "clients", "list", "--json", **on)
        assert listed.returncode == 0, listed.stderr
        assert "loader" in {c["agent"] for c in json.loads(listed.stdout)["clients"]}
        held = ippctl(site, "clients", "pause", "--agent", "loader", **on)
        assert held.returncode == 0, held.stderr
        assert await i2p.fetch_val(FLAGS) == 1 and await proc_db.fetch_val(FLAGS) == 1
        assert ippctl(site, "clients", "resume", "--agent", "loader", **on).returncode == 0
        assert await i2p.fetch_val(FLAGS) == 0
        # a loader that died after registering a fileset and before recording it: the next
        # attempt adopts that fileset instead of building the batch again under a new number
        await i2p.execute(UNLOAD, name="B00000004")
        await i2p.execute(REQUEUE, name="B00000004")
        again = AgentProcess(
            "loader", site.dsn, tmp_path, "--once", "--config", "demo", var_dir=str(site.var_dir), **on
        )
        assert await again.wait(timeout_s=180) == 0, again.output()
        assert [e["batch"] for e in again.events("batch_publish_resumed")] == ["B00000004"]
        rows = await i2p.fetch_all(BATCHES)
        assert len(rows) == 4 and rows[-1]["loaded_to_datastore"] == "succeeded"
    finally:
        await proc_db.close()


async def test_reads_of_the_processing_database_cannot_write(separate):
    """The loading side reaches the processing database read-only for what it reads."""
    site, _ = separate
    reads = await Database.connect(site.settings, site.dsn, read_only=True)
    try:
        assert await reads.fetch_val(TABLE, name="camRun") == 1
        with pytest.raises(DbError, match="read-only session"):
            await reads.execute(Query("t_w", "UPDATE camRun SET label = label", "test"))
    finally:
        await reads.close()


def test_an_agent_given_the_wrong_database_for_its_role_refuses_to_start(separate):
    """A processing agent pointed at the ippToPsps database, and the loader pointed at a
    processing database without the loading tables, each say which tables are missing."""
    site, i2p = separate
    wrong = run_ippctl_agent(i2p.dsn.url(), site, "cleanup")
    assert wrong.returncode == 1 and "not the processing ones" in wrong.stderr, wrong.stderr
    bare = run_ippctl_agent(site.dsn, site, "loader", "--config", "demo")
    assert bare.returncode == 1 and "not the ipptopsps ones" in bare.stderr, bare.stderr


def run_ippctl_agent(dsn: str, site: SurveySite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents", *args, "--once"],
        cwd=ROOT,
        env={**agent_env(dsn), "IPP_VAR_DIR": str(site.var_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
