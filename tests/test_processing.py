"""The processing database, the reference processor, the survey and the run tools."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from shared.core import ids
from shared.core.errors import DbError, MdcError
from shared.core.settings import Dsn, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import CODE_SCHEMA_VERSION, create_database, drop_database, upgrade
from shared.formats import catalogs
from shared.formats.dvo import DvoDatabase
from shared.processing import runio, runs
from shared.processing.filerules import rules_for
from shared.processing.stages import STAGES, StageError
from shared.storage.store import Storage
from tests.survey_fixture import SurveySite, make_survey, sibling

#: REFERENCE 1: each table with the columns it must have (IPP names).
REFERENCE_TABLES = {
    "rawExp": "exp_id exp_name camera telescope dateobs filter ra decl exp_time airmass state "
    "workdir magicked",
    "rawImfile": "exp_id class_id uri data_state bytes md5sum magicked",
    "chipRun": "chip_id exp_id state workdir label data_group dist_group reduction dvodb tess_id "
    "end_stage magicked software_ver note",
    "chipImfile": "chip_id class_id chip_imfile_id",
    "chipProcessedImfile": "chip_id exp_id class_id data_state uri path_base fault quality magicked",
    "camRun": "cam_id chip_id state workdir label magicked",
    "camProcessedExp": "cam_id uri path_base zpt_obs fault quality",
    "warpRun": "warp_id fake_id state workdir label magicked",
    "warpSkyCellMap": "warp_id skycell_id tess_id class_id",
    "warpImfile": "warp_id skycell_id",
    "warpSkyfile": "warp_id skycell_id tess_id uri path_base data_state fault quality magicked",
    "diffRun": "diff_id state workdir label magicked",
    "diffInputSkyfile": "diff_id skycell_id warp1 stack1 warp2 stack2",
    "diffSkyfile": "diff_id skycell_id path_base data_state fault quality magicked",
    "stackRun": "stack_id state workdir label skycell_id tess_id filter",
    "stackInputSkyfile": "stack_id warp_id",
    "stackSumSkyfile": "stack_id uri path_base fault quality",
    "magicRun": "magic_id exp_id state",
    "magicDSRun": "magic_ds_id magic_id stage stage_id state",
    "magicDSFile": "magic_ds_id component backup_path_base recovery_path_base data_state",
    "addRun": "add_id stage stage_id state dvodb label",
    "Label": "label priority",
    "dbversion": "schema_version",
}
COLUMNS = Query(
    "t_columns",
    "SELECT column_name AS name FROM information_schema.columns "
    "WHERE table_schema = DATABASE() AND table_name = %(t)s",
    "test",
)


@pytest.fixture(scope="module")
async def site(test_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SurveySite]:
    survey = await make_survey(
        test_dsn, "svy", tmp_path_factory.mktemp("survey"), exposures=4, chips=3, seed=7
    )
    yield survey
    await drop_database(survey.settings, parse(survey.dsn))


def parse(dsn: str) -> Dsn:
    return parse_dsn(dsn)


async def test_schema_has_the_reference_tables_and_columns(db):
    for table, names in REFERENCE_TABLES.items():
        have = {r["name"] for r in await db.fetch_all(COLUMNS, t=table)}
        missing = [c for c in names.split() if c not in have]
        assert not missing, f"{table} lacks {missing}"


async def test_the_database_refuses_an_unknown_state(sdb):
    bad = Query("t_bad_state", "UPDATE chipRun SET state = 'sideways' WHERE chip_id = 1", "test")
    with pytest.raises(DbError, match="chipRun_state_valid"):
        await sdb.execute(bad)


async def test_the_survey_records_every_stage_full_with_files(sdb, site):
    for stage_name in ("chip", "camera", "warp", "stack", "diff"):
        listed = await runs.list_runs(sdb, stage_name)
        assert listed and all(r["state"] == "full" for r in listed), stage_name
        files = await runs.run_files(sdb, stage_name, listed[0]["id"])
        # every product is there; the files an update writes about itself come with updates
        written_by_updates = {r.name for r in rules_for(stage_name) if r.from_update}
        missing = [f.key for f in files if not f.exists and f.rule not in written_by_updates]
        assert files and not missing, f"{stage_name}: {missing[:3]}"
    chips = await runs.list_runs(sdb, "chip")
    assert [r["magicked"] for r in chips[:3]] == [1, 0, 0]  # destreaked / streak kept / none
    add = Query("t_add", "SELECT COUNT(*) AS n FROM addRun WHERE stage = 'camera' AND state = 'full'", "test")
    assert await sdb.fetch_val(add) == 4


async def test_chip_files_follow_the_reference_7_naming(sdb):
    files = await runs.run_files(sdb, "chip", 1)
    names = {f.key.rsplit("/", 1)[1] for f in files}
    assert re.fullmatch(
        r"o\d{4}g\d{4}o\.\d+\.ch\.1\.XY\d\d\.cmf", next(n for n in names if n.endswith(".cmf"))
    )
    for suffix in (".b1.fits", ".b2.fits", ".log", ".trace", ".stats", ".mdl.fits", ".ppImage.mdc"):
        assert any(n.endswith(suffix) for n in names), suffix


async def test_reference_processor_output_is_byte_identical_across_runs(site, test_dsn, tmp_path):
    """The same seed gives the same md5 for every product of every stage."""
    again = await make_survey(test_dsn, "svy2", tmp_path, exposures=4, chips=3, seed=7)
    try:
        first, second = await _md5s(site), await _md5s(again)
        assert len(first) > 500
        assert first == second
    finally:
        await drop_database(again.settings, parse(again.dsn))


async def _md5s(s: SurveySite) -> dict[str, str]:
    db = await Database.connect(s.settings)
    try:
        rows = await Storage(db).list("", limit=100000)
        return {r["key"]: r["md5sum"] for r in rows}
    finally:
        await db.close()


async def test_smf_and_cmf_open_in_astropy_with_ps1_v5_columns(sdb):
    files = await runs.run_files(sdb, "camera", 1)
    smf = next(f for f in files if f.rule == "PSASTRO.OUTPUT")
    path = await Storage(sdb).locate(smf.key)
    with fits.open(path) as hdus:
        assert hdus[0].header["EXPTIME"] == 30.0 and "FILTERID" in hdus[0].header
        tables = [h for h in hdus if h.name.endswith(".PSF")]
        heads = [h for h in hdus if h.name.endswith(".HDR")]
        assert len(tables) == len(heads) == 3
        for head, table in zip(heads, tables, strict=True):
            assert head.header["NAXIS"] == 0 and head.header["EXTDATA"] == table.name.replace("PSF", "psf")
            assert table.header["EXTTYPE"] == "PS1_V5"
            assert table.columns.names == [n for n, _ in catalogs.PS1_V5]
            i = table.columns.names.index("IPP_IDET") + 1
            assert table.header[f"TFORM{i}"] == "J" and table.header[f"TZERO{i}"] == 2147483648
            j = table.columns.names.index("N_FRAMES") + 1
            assert table.header[f"TFORM{j}"] == "I" and table.header[f"TZERO{j}"] == 32768
            assert table.columns["RA_PSF"].format == "D"
            for key in (
                "IMAGEID",
                "SOURCEID",
                "MJD-OBS",
                "PHOTCODE",
                "ZPT_OBS",
                "ZPT_ERR",
                "FWHM_MAJ",
                "MSKY_MN",
                "DETEFF.MAGREF",
                "NASTRO",
                "CRVAL1",
            ):
                assert key in head.header, key
            data = table.data
            assert list(data["IPP_IDET"]) == list(range(len(data)))
            assert np.allclose(
                data["CAL_PSF_MAG"],
                data["PSF_INST_MAG"] + head.header["ZPT_OBS"] + 2.5 * np.log10(head.header["EXPTIME"]),
                atol=1e-4,
            )


async def test_every_detection_is_in_dvo_with_the_psps_ids(sdb, site):
    dvo = DvoDatabase(site.dvo_dir)
    images = dvo.images()
    by_extern = {int(r["EXTERN_ID"]): int(r["IMAGE_ID"]) for r in images}
    measures, objects = {}, {}
    for region in dvo.regions():
        cpm, cpt = dvo.measurements(region), dvo.objects(region)
        for m in cpm:
            measures[(int(m["IMAGE_ID"]), int(m["DET_ID"]))] = (m, cpt[int(m["AVE_REF"])])
        objects[region.index] = cpt
    checked = 0
    for chip_run in await runs.list_runs(sdb, "chip"):
        for f in await runs.run_files(sdb, "chip", chip_run["id"]):
            if f.rule != "PSPHOT.OUTPUT":
                continue
            header, table = catalogs.read_cmf(await Storage(sdb).locate(f.key))
            image_id = by_extern[int(header["IMAGEID"])]
            code = (
                10000 + 100 * "grizy".index(header["PHOTCODE"].split(".")[1]) + int(header["PHOTCODE"][-2:])
            )
            for row in table:
                m, obj = measures[(image_id, int(row["IPP_IDET"]))]
                assert int(m["EXT_ID"]) == ids.detect_id(header["MJD-OBS"], code, int(row["IPP_IDET"]))
                assert int(obj["EXT_ID"]) == ids.obj_id(float(obj["RA"]), float(obj["DEC"]))
                assert int(m["CAT_ID"]) == int(obj["CAT_ID"])
                checked += 1
    assert checked > 100


# The survey makes no fake runs (warps come from camera runs here); a fake run's import is
# tested in test_dist_bad_input.test_a_fake_stage_fileset_is_imported.
@pytest.mark.parametrize("stage_name", [s for s in STAGES if s != "fake"])
async def test_export_then_import_reproduces_the_rows(sdb, site, stage_name, test_dsn):
    run_id = (await runs.list_runs(sdb, stage_name, limit=1))[0]["id"]
    text = runio.export_text(await runio.export_run(sdb, stage_name, run_id))
    target = parse(sibling(test_dsn, "imp"))
    await create_database(site.settings, target)
    other = await Database.connect(site.settings, target)
    try:
        await upgrade(other)
        result = await runio.import_run(other, text, "export.mdc")
        assert not result.already_present and result.rows > 1
        again = runio.export_text(await runio.export_run(other, stage_name, run_id))
        assert again == text
        assert (await runio.import_run(other, text)).already_present
    finally:
        await other.close()
        await drop_database(site.settings, target)


async def test_transitions_are_enforced_and_a_refusal_changes_nothing(sdb):
    chip_ids = [r["id"] for r in await runs.list_runs(sdb, "chip")]
    with pytest.raises(StageError, match=r"chipRun \d+ is full: cannot set update"):
        await runs.set_state(sdb, "chip", "update", run_id=chip_ids[0])
    changes = await runs.set_state(sdb, "chip", "goto_cleaned", run_id=chip_ids[0])
    assert [(c.was, c.now) for c in changes] == [("full", "goto_cleaned")]
    with pytest.raises(StageError, match=r"cleanup \(goto_cleaned\) is pending"):
        await runs.set_state(sdb, "chip", "update", run_id=chip_ids[0])
    # By label: one run refused -> none changed.
    with pytest.raises(StageError, match="nothing was changed"):
        await runs.set_state(sdb, "chip", "update", label="survey.nightly")
    states = [r["state"] for r in await runs.list_runs(sdb, "chip")]
    assert states.count("update") == 0
    with pytest.raises(StageError, match="raw runs are not cleaned"):
        await runs.set_state(sdb, "raw", "goto_cleaned", run_id=1)
    await runs.set_state(sdb, "chip", "goto_purged", run_id=chip_ids[0])


async def test_export_clean_rewrites_full_and_refuses_other_states(sdb):
    doc = await runio.export_run(sdb, "warp", 2, clean=True)
    text = runio.export_text(doc)
    assert "cleaned" in text and " full " not in text
    await runs.set_state(sdb, "warp", "goto_cleaned", run_id=3)
    with pytest.raises(runio.RunIoError, match="its state is 'goto_cleaned'"):
        await runio.export_run(sdb, "warp", 3, clean=True)


async def test_bad_import_files_are_refused_and_nothing_is_written(sdb, site, test_dsn):
    text = runio.export_text(await runio.export_run(sdb, "camera", 1))
    target = parse(sibling(test_dsn, "bad"))
    await create_database(site.settings, target)
    other = await Database.connect(site.settings, target)
    count = Query(
        "t_count",
        "SELECT (SELECT COUNT(*) FROM camRun) + (SELECT COUNT(*) FROM camProcessedExp) AS n",
        "test",
    )
    cases = {
        "version": (
            text.replace(
                f"schema_version   STR       {CODE_SCHEMA_VERSION}", "schema_version   STR       99"
            ),
            "schema version 99",
        ),
        "truncated": (text[: text.index("camProcessedExp  METADATA") + 60], "has no END"),
        "orphan": (
            text.replace("   cam_id           S64       1\n", "   cam_id           S64       5\n").replace(
                "   cam_id           S64       5\n", "   cam_id           S64       1\n", 1
            ),
            "refers to cam_id 5",
        ),
        "unknown column": (text.replace("   uri ", "   bogus_col ", 1), "bogus_col"),
        "not mdc": ("<html>oops</html>\n", "bad name"),
    }
    try:
        await upgrade(other)
        for label, (bad, message) in cases.items():
            with pytest.raises((runio.RunIoError, MdcError)) as info:
                await runio.import_run(other, bad, f"{label}.mdc")
            assert message in str(info.value), (label, str(info.value))
            assert await other.fetch_val(count) == 0, label
    finally:
        await other.close()
        await drop_database(site.settings, target)


def test_unknown_stages_and_states_are_named():
    from shared.processing.stages import check_state, stage

    with pytest.raises(StageError, match="unknown stage 'chips'"):
        stage("chips")
    with pytest.raises(StageError, match="unknown state 'clean'"):
        check_state("clean")


def test_survey_files_are_in_the_sites_volumes(site):
    assert (site.var_dir / "storage" / "ipp" / "vol0").is_dir()
    assert any(Path(site.var_dir / "storage" / "ipp").rglob("*.smf"))
