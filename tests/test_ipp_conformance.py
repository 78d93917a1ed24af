"""Conformance with the IPP's own code, from facts of its public source.

The gpc1 schema, exports and imports: the facts are named in each test's docstring.

The mdc reader: ``tests/corpus/ipp_mdc/`` holds files of this project's own, each following
one rule of the IPP's grammar (``PS-IPP-Metadata-Config/config_grammar.txt``) or one case of
its tests (``PS-IPP-Metadata-Config/t/04_type.t``, ``05_time.t``, ``06_multi.t``), named in
its first line. Every file under ``accept/`` must parse, every one under ``refuse/`` must be
refused with an error naming the file and the line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from shared.core.errors import MdcError
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import CODE_SCHEMA_VERSION
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar, Vector
from shared.processing import runio
from tests.helpers import ROOT

CORPUS = Path(__file__).resolve().parent / "corpus" / "ipp_mdc"


def _files(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).glob("*.mdc"))


def test_every_corpus_file_names_the_ipp_source_it_follows():
    for path in [*_files("accept"), *_files("refuse")]:
        first = path.read_text().splitlines()[0]
        follows = r"# Follows (PS-IPP-Metadata-Config/(t/0\d_\w+\.t|config_grammar\.txt)|ippconfig/)"
        assert re.match(follows, first), path


@pytest.mark.parametrize("path", _files("accept"), ids=lambda p: p.stem)
def test_what_the_ipp_grammar_accepts_is_read(path: Path):
    assert isinstance(mdc.load(path), Block)


@pytest.mark.parametrize("path", _files("refuse"), ids=lambda p: p.stem)
def test_what_the_ipp_grammar_refuses_is_refused_naming_file_and_line(path: Path):
    with pytest.raises(MdcError, match=rf"{re.escape(path.name)}:\d+: "):
        mdc.load(path)


def _block(doc: Block, name: str) -> Block:
    item = doc.get(name)
    assert isinstance(item, Block), name
    return item


def test_a_typedef_line_is_a_block_of_str_fields_and_types_are_per_block():
    """04_type.t: fields by name, values as STR; a nested block's own TYPE wins there."""
    doc = mdc.load(CORPUS / "accept" / "typedef_basic.mdc")
    amp = _block(doc, "AMP.B")
    assert [(n, i) for n, i in amp] == [
        ("EXTNAME", Scalar("STR", "XY02")),
        ("OVERSCAN", Scalar("STR", "OV-B")),
        ("DETECTOR", Scalar("STR", "DET.1")),
    ]
    assert _block(doc, "AMP.A").comment == "the first"
    scoped = mdc.load(CORPUS / "accept" / "typedef_scopes.mdc")
    camera = _block(scoped, "CAMERA")
    assert [n for n, _ in _block(camera, "AMP.A")] == ["EXTNAME"]
    assert _block(_block(camera, "INNER"), "AMP.A").value("GAIN") == "1.5"


def test_every_time_type_takes_null_and_iso8601():
    """05_time.t: UTC, UT1, TAI and TT; NULL is no time; Z and fractions are optional."""
    nulls = mdc.load(CORPUS / "accept" / "times_null.mdc")
    assert [(i.type, i.value) for i in nulls.get_all("when") if isinstance(i, Scalar)] == [
        ("UTC", None),
        ("UT1", None),
        ("TAI", None),
        ("TT", None),
    ]
    seen = [
        i for i in mdc.load(CORPUS / "accept" / "times_iso8601.mdc").get_all("seen") if isinstance(i, Scalar)
    ]
    assert [i.value for i in seen] == [
        datetime(2010, 6, 1, 4, 30, 15),
        datetime(2010, 6, 1, 4, 30, 15),
        datetime(2010, 6, 1, 4, 30, 15, 250000),
        datetime(2010, 6, 1, 4, 30, 15, 500000),
    ]


def test_a_name_repeated_without_multi_keeps_the_first_and_warns():
    """06_multi.t ("MULTI METADATA structure, not declared", "missing MULTI declaration")."""
    blocks = mdc.load(CORPUS / "accept" / "repeated_block_without_multi.mdc")
    assert len(blocks.get_all("recipe")) == 1 and _block(blocks, "recipe").value("level") == 1
    assert len(blocks.warnings) == 1 and "recipe repeated without MULTI" in blocks.warnings[0]
    scalars = mdc.load(CORPUS / "accept" / "repeated_scalar_without_multi.mdc")
    assert scalars.get_all("depth") == [Scalar("S8", -3)] and scalars.warnings


def test_multi_typedef_entries_repeat_and_the_grammar_types_read():
    """06_multi.t ("MULTI TYPE"); config_grammar.txt's type, vtype and bool rules."""
    cells = mdc.load(CORPUS / "accept" / "multi_typedef.mdc").get_all("det")
    assert [b.value("y0") for b in cells if isinstance(b, Block)] == ["0", "512"]
    doc = mdc.load(CORPUS / "accept" / "types_and_bools.mdc")
    assert doc.get("name") == Scalar("STR", "a long name")
    assert (doc.value("ratio"), doc.value("weight")) == (0.25, -1500.0)
    assert (doc.value("on"), doc.value("off"), doc.value("maybe")) == (True, False, True)
    assert doc.get("flags") == Vector("BOOL", (True, False, True))


def test_a_file_rules_recipe_laid_out_as_the_ipp_s_reads_with_its_two_typedefs():
    """ippconfig/recipes/filerules-split.mdc: INPUT and OUTPUT typedefs, tabs, patterns."""
    doc = mdc.load(CORPUS / "accept" / "filerules_layout.mdc")
    assert _block(doc, "MYTOOL.INPUT.MASK").value("FILENAME.RULE") == "@DETDB"
    image = _block(doc, "MYTOOL.OUT.IMAGE")
    assert image.value("FILENAME.RULE") == "{OUTPUT}.{CHIP.NAME}.fits"
    assert image.value("FILE.FORMAT") == "NONE" and len(image.entries) == 6


def test_ippctl_mdc_check_reads_the_ipp_forms_and_warns_of_a_dropped_repeat():
    path = CORPUS / "accept" / "repeated_block_without_multi.mdc"
    out = subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", "mdc", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and "ok, 1 top-level entries" in out.stdout, out.stderr
    assert "warning:" in out.stderr and "recipe repeated without MULTI" in out.stderr
    bad = CORPUS / "refuse" / "time_utc_with_space.mdc"
    out = subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", "mdc", "check", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1 and "time_utc_with_space.mdc:2:" in out.stderr


# -- the gpc1 schema -----------------------------------------------------------------------

GPC1_COLUMNS = Path(__file__).resolve().parent / "corpus" / "ipp_schema" / "gpc1_columns.txt"
#: Where this schema differs from the gpc1 column it holds, and why.
SCHEMA_DIFFERENCES = {
    # This project's dbversion counts its own migrations (an integer); an IPP export's
    # string version (1.1.72) is read on import, never stored here.
    ("dbversion", "schema_version"),
    ("dbversion", "updated"),
}
#: A type here that holds every value of the IPP's type (BIGINT for INT, CHAR for VARCHAR).
WIDER = {"INT": ("INT", "BIGINT"), "VARCHAR": ("VARCHAR", "CHAR"), "TIMESTAMP": ("TIMESTAMP", "DATETIME")}


def _gpc1_columns() -> dict[str, list[tuple[str, str]]]:
    tables: dict[str, list[tuple[str, str]]] = {}
    for line in GPC1_COLUMNS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        table, columns = line.split(":", 1)
        tables[table.strip()] = [tuple(c.strip().split(" ", 1)) for c in columns.split(",")]  # type: ignore[misc]
    return tables


def _holds(ipp_type: str, here: str) -> bool:
    """Whether a column of type ``here`` (information_schema COLUMN_TYPE) holds ipp_type's values."""
    base = ipp_type.split("(")[0].upper()
    here_base = here.split("(")[0].upper()
    if here_base not in WIDER.get(base, (base,)):
        return False
    width = re.search(r"\((\d+)\)", ipp_type)
    here_width = re.search(r"\((\d+)\)", here)
    return not (base == "VARCHAR" and width and here_width and int(here_width[1]) < int(width[1]))


async def test_the_schema_holds_every_gpc1_column_with_its_ipp_name_and_type(db):
    """Facts from ippTools/share/pxadmin_create_tables.sql (tests/corpus/ipp_schema)."""
    columns_of = Query(
        "t_columns",
        "SELECT table_name AS t, column_name AS c, column_type AS ty FROM information_schema.columns "
        "WHERE table_schema = DATABASE()",
        "test",
    )
    here: dict[tuple[str, str], str] = {
        (str(r["t"]), str(r["c"])): str(r["ty"]) for r in await db.fetch_all(columns_of)
    }
    tables = _gpc1_columns()
    assert sum(len(c) for c in tables.values()) > 600
    missing, narrower = [], []
    for table, columns in tables.items():
        for name, ipp_type in columns:
            if (table, name) in SCHEMA_DIFFERENCES:
                continue
            if (table, name) not in here:
                missing.append(f"{table}.{name}")
            elif not _holds(ipp_type, here[(table, name)]):
                narrower.append(f"{table}.{name} {here[(table, name)]} (IPP: {ipp_type})")
    assert missing == [] and narrower == []


# -- exports and imports: NULLs as psDB writes them, the IPP's dbversion ------------------

CAM_ID = 970001


async def _camera_run(db: Database) -> None:
    """A full camera run whose processed row has NULL numbers, times and strings."""
    await db.execute(
        Query(
            "t_cam",
            "INSERT INTO camRun (cam_id, chip_id, state, label, registered) "
            "VALUES (%(id)s, 5, 'full', NULL, NULL)",
            "test",
        ),
        id=CAM_ID,
    )
    await db.execute(
        Query(
            "t_cam_exp",
            "INSERT INTO camProcessedExp (cam_id, uri, bg, n_stars, path_base, fault, quality, astrom_chips) "
            "VALUES (%(id)s, NULL, NULL, NULL, %(base)s, 0, 0, NULL)",
            "test",
        ),
        id=CAM_ID,
        base=f"neb://h/t/o1.{CAM_ID}.cm",
    )


async def _drop_camera_run(db: Database) -> None:
    for table in ("camProcessedExp", "camRun"):
        await db.execute(Query("t_drop", f"DELETE FROM {table} WHERE cam_id = %(id)s", "test"), id=CAM_ID)


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.split()[:1] == [name])


async def test_an_export_writes_null_numbers_and_times_as_psdb_and_pslib_do_and_import_gives_nulls_back(db):
    """psLib psDB.c (psDBGetPTypeNaN: a NULL column becomes its type's largest value, NAN for
    F32/F64, a NULL psTime) and psMetadataConfig.c (psMetadataItemFormat: "%-15s  %-8s  %-15"
    per type, ".7g"/".15g", a NULL time as "TAI  NULL", an empty string as "NULL")."""
    await _drop_camera_run(db)
    await _camera_run(db)
    try:
        text = runio.export_text(await runio.export_run(db, "camera", CAM_ID))
        numbers = [
            line.split()
            for line in text.splitlines()
            if line.split()[1:2] in (["S16"], ["S32"], ["S64"], ["F32"], ["F64"])
        ]
        assert numbers and not [n for n in numbers if n[2] == "NULL"]
        assert _line(text, "n_stars").split() == ["n_stars", "S32", "2147483647"]
        assert _line(text, "astrom_chips").split() == ["astrom_chips", "S64", "9223372036854775807"]
        assert _line(text, "bg").split() == ["bg", "F32", "nan"]
        assert _line(text, "registered").split() == ["registered", "TAI", "NULL"]
        assert _line(text, "label").split() == ["label", "STR", "NULL"]
        assert _line(text, "schema_version").split() == ["schema_version", "STR", str(CODE_SCHEMA_VERSION)]
        assert re.search(r"^   n_stars {10}S32 {7}2147483647 *$", text, re.M)  # %-15s  %-8s  %-15d
        # pxCheckImportVersion looks dbversion up as a MULTI, and each table is one too.
        assert re.match(r"dbversion MULTI\ndbversion  METADATA\n", text)
        assert "\ncamRun MULTI\ncamRun  METADATA\n" in text

        await _drop_camera_run(db)
        result = await runio.import_run(db, text, "cam.mdc")
        assert (result.rows, result.version) == (2, str(CODE_SCHEMA_VERSION))
        row = await db.fetch_one(
            Query(
                "t_back",
                "SELECT r.label, r.registered, e.bg, e.n_stars, e.astrom_chips, e.uri FROM camRun r "
                "JOIN camProcessedExp e USING (cam_id) WHERE cam_id = %(id)s",
                "test",
            ),
            id=CAM_ID,
        )
        assert row is not None and set(row.values()) == {None}
    finally:
        await _drop_camera_run(db)


def _ipp_export(extra: str = "") -> str:
    """A camera export as an IPP site writes it: ``dbversion`` a MULTI of blocks holding the
    STR schema_version (ippTools pxtools.c pxExportVersion/pxCheckImportVersion), tables as
    MULTI of METADATA blocks (camtool.c exportrunMode), the gpc1 columns and psDB NULLs."""
    return (
        "dbversion MULTI\n"
        "dbversion  METADATA\n   schema_version   STR       1.1.72 \n   updated   TAI   NULL\nEND\n"
        "camRun MULTI\n"
        f"camRun  METADATA\n   cam_id           S64       {CAM_ID}\n   chip_id  S64  5\n"
        "   state  STR  full \n   label  STR  NULL \n   expgroup  STR  NULL \n"
        "   maskfrac_ref_npix  F32  nan\n   registered  TAI  NULL\n"
        "   magicked  S64  9223372036854775807\nEND\n"
        "camProcessedExp MULTI\n"
        f"camProcessedExp  METADATA\n   cam_id  S64  {CAM_ID}\n   bg  F32  nan\n   n_stars  S32  2147483647\n"
        f"   path_base  STR  neb://h/t/o1.{CAM_ID}.cm \n   fault  S16  0\n   quality  S16  0\n"
        f"   zpt_obs  F32  24.5\n   ast_r0  F32  0.25\n{extra}END\n"
    )


async def test_an_ipp_export_with_its_string_dbversion_and_gpc1_columns_is_imported(db):
    await _drop_camera_run(db)
    try:
        result = await runio.import_run(db, _ipp_export(), "ipp.mdc")
        assert (result.rows, result.version, result.ignored_columns) == (2, "1.1.72", ())
        row = await db.fetch_one(
            Query(
                "t_ipp",
                "SELECT bg, n_stars, zpt_obs, ast_r0 FROM camProcessedExp WHERE cam_id = %(id)s",
                "test",
            ),
            id=CAM_ID,
        )
        assert row == {"bg": None, "n_stars": None, "zpt_obs": 24.5, "ast_r0": 0.25}
        # camRun.magicked is NULL-able in gpc1 and NOT NULL DEFAULT 0 here: the default applies.
        magicked = Query("t_magicked", "SELECT magicked FROM camRun WHERE cam_id = %(id)s", "test")
        assert await db.fetch_val(magicked, id=CAM_ID) == 0
        again = await runio.import_run(db, _ipp_export(), "ipp.mdc")
        assert again.already_present
    finally:
        await _drop_camera_run(db)


async def test_a_column_this_database_lacks_is_refused_by_name_unless_ignored(db, test_dsn, tmp_path):
    await _drop_camera_run(db)
    path = tmp_path / "ipp.mdc"
    path.write_text(_ipp_export("   future_col  F32  1.5\n"))
    try:
        with pytest.raises(runio.RunIoError, match=r"camProcessedExp has column.*future_col"):
            await runio.import_run(db, path.read_text(), str(path))
        assert await db.fetch_val(COUNT_CAM, id=CAM_ID) == 0
        env = {**os.environ, "IPP_DB_DSN": test_dsn}
        refused = subprocess.run(
            [sys.executable, "-m", "shared.ctl.main", "runs", "import", str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
        assert refused.returncode != 0 and "future_col" in refused.stderr
        taken = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.ctl.main",
                "runs",
                "import",
                str(path),
                "--ignore-unknown-columns",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
        )
        assert taken.returncode == 0, taken.stderr
        assert "camProcessedExp.future_col" in taken.stderr
        assert f"imported camera {CAM_ID}: 2 rows" in taken.stdout
        assert await db.fetch_val(COUNT_CAM, id=CAM_ID) == 1
    finally:
        await _drop_camera_run(db)


COUNT_CAM = Query("t_count_cam", "SELECT COUNT(*) FROM camRun WHERE cam_id = %(id)s", "test")


async def test_an_unknown_dbversion_form_and_a_newer_version_are_refused(db):
    for version, message in (("banana", "neither this project's"), (str(CODE_SCHEMA_VERSION + 1), "newer")):
        text = _ipp_export().replace("1.1.72", version)
        with pytest.raises(runio.RunIoError, match=message):
            await runio.import_run(db, text, "v.mdc")


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("o4741g0234o.fake.2799.11.1", True),  # seed 002's product list
        ("o4741g0239o.raw.36625.27.1", True),
        ("stack.9554.42.2", True),
        ("diff.123.4.5", True),  # dist_make_fileset.pl: no exp_name tag for stack and diff
        ("o1.diff.7.1.1", True),  # this project's servers before: kept readable
        ("o1.stack.7.1.1", False),
        ("../x.chip.1.1.1", False),
        ("o1.chip.1.1", False),
    ],
)
def test_fileset_names_follow_dist_make_fileset(name: str, taken: bool):
    from agents.dist_client import FILESET

    assert bool(FILESET.match(name)) is taken
