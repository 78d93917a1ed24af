"""Conformance with the IPP's own code, from facts of its public source.

The gpc1 schema, exports and imports: the facts are named in each test's docstring.

The mdc reader: ``tests/corpus/ipp_mdc/`` holds files of this project's own, each following
one rule of the IPP's grammar (``PS-IPP-Metadata-Config/config_grammar.txt``) or one case of
its tests (``PS-IPP-Metadata-Config/t/04_type.t``, ``05_time.t``, ``06_multi.t``), named in
its first line. Every file under ``accept/`` must parse, every one under ``refuse/`` must be
refused with an error naming the file and the line.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.core.errors import MdcError
from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database, Tx
from shared.db.queries import Q, Query
from shared.db.schema import (
    CODE_SCHEMA_VERSION,
    apply_statements,
    create_database,
    drop_database,
    migrations,
    upgrade,
)
from shared.distribution import datastore
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar, Vector
from shared.processing import runio
from tests import ipp_dsindex
from tests.helpers import FAST, ROOT, AgentProcess, agent_env, eventually
from tests.mirror_fixture import free_port
from tests.survey_fixture import SurveySite, configure_loading, ippctl, survey_site

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


# -- the schema against the IPP's table definitions --------------------------------------

IPP_COLUMNS = Path(__file__).resolve().parent / "corpus" / "ipp_schema" / "ipp_columns.txt"
#: A type here that holds every value of the IPP's type (BIGINT for INT, CHAR for VARCHAR).
WIDER = {"INT": ("INT", "BIGINT"), "VARCHAR": ("VARCHAR", "CHAR"), "TIMESTAMP": ("TIMESTAMP", "DATETIME")}
#: Where this schema's type differs from the IPP's, and why (docs/formats.md says the same).
TYPE_DIFFERENCES = {
    # This project's dbversion counts its own migrations (an integer); an IPP export's
    # string version (1.1.72) is read on import, never stored here.
    ("dbversion", "schema_version"): "counts this project's migrations",
}
#: Columns NOT NULL here and NULL-able in the IPP's tables, by the reason docs/formats.md
#: gives for them (the phrase each reason is found by there). state, data_state, magicked
#: and fault columns are named by their column name alone.
NOT_NULL_HERE: dict[str, set[tuple[str, str]]] = {
    "every row has one of REFERENCE 1's states": set(),
    "magicked is NOT NULL DEFAULT 0": set(),
    "fault is NOT NULL DEFAULT 0": set(),
    "what a row belongs to": {
        ("chipRun", "exp_id"), ("camRun", "chip_id"), ("addRun", "stage"), ("addRun", "stage_id"),
        ("magicDSRun", "magic_id"), ("magicDSRun", "stage"), ("magicDSRun", "stage_id"),
        ("distTarget", "stage"), ("distRun", "stage"), ("distRun", "stage_id"),
        ("diffInputSkyfile", "diff_id"), ("diffInputSkyfile", "skycell_id"),
        ("stackRun", "skycell_id"), ("stackRun", "tess_id"), ("dsFileset", "prod_id"),
        ("dsFile", "fileset_id"),
    },
    "an exposure is named": {
        ("rawExp", "exp_name"), ("rawExp", "camera"), ("rawExp", "telescope"), ("rawExp", "dateobs"),
        ("rawImfile", "exp_name"),
    },
    "compared with = in claims": {("distTarget", "clean"), ("distRun", "clean"), ("dsFileset", "hide")},
    "a file's size, md5sum and type": {("dsFile", "bytes"), ("dsFile", "md5sum"), ("dsFile", "type")},
    "primary keys of this project's own": {
        ("dbversion", "schema_version"), ("dbversion", "updated"), ("dsFileType", "type"),
        ("rcDestination", "name"), ("rcDestination", "status_uri"), ("rcDSFileset", "name"),
    },
}  # fmt: skip
#: Columns NULL-able here that the IPP's primary key makes NOT NULL, and why.
NULL_HERE = {
    ("rcDSFileset", "dist_id"): "primary keys of this project's own",
    ("rcDSFileset", "dest_id"): "primary keys of this project's own",
}
BY_COLUMN_NAME = {
    "state": "every row has one of REFERENCE 1's states",
    "data_state": "every row has one of REFERENCE 1's states",
    "magicked": "magicked is NOT NULL DEFAULT 0",
    "fault": "fault is NOT NULL DEFAULT 0",
}


@dataclass(frozen=True)
class IppColumn:
    table: str
    name: str
    type: str
    not_null: bool


def ipp_columns() -> list[IppColumn]:
    """tests/corpus/ipp_schema/ipp_columns.txt: ``table [primary key]: col TYPE [NOT NULL |
    AUTO_INCREMENT], ...``. MySQL makes primary key and AUTO_INCREMENT columns NOT NULL."""
    found = []
    for line in IPP_COLUMNS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, columns = line.split(":", 1)
        table, key = head.split(" [", 1)
        primary = set(key.rstrip("]").split())
        for column in columns.split(","):
            name, kind, *rest = column.split()
            not_null = name in primary or "AUTO_INCREMENT" in rest or rest[:2] == ["NOT", "NULL"]
            found.append(IppColumn(table, name, kind, not_null))
    return found


def _holds(ipp_type: str, here: str) -> bool:
    """Whether a column of type ``here`` (information_schema COLUMN_TYPE) holds ipp_type's values."""
    base = ipp_type.split("(")[0].upper()
    here_base = here.split("(")[0].upper()
    if here_base not in WIDER.get(base, (base,)):
        return False
    width = re.search(r"\((\d+)\)", ipp_type)
    here_width = re.search(r"\((\d+)\)", here)
    return not (base == "VARCHAR" and width and here_width and int(here_width[1]) < int(width[1]))


SCHEMA_COLUMNS = Query(
    "t_columns",
    "SELECT table_name AS t, column_name AS c, column_type AS ty, is_nullable AS n "
    "FROM information_schema.columns WHERE table_schema = DATABASE()",
    "test",
)


async def test_the_schema_holds_every_ipp_column_of_the_tables_it_shares_as_wide_and_as_null_able(db):
    """Facts from ippTools/share/pxadmin_create_tables.sql and DataStoreServer/scripts/
    tabledefs.sql (tests/corpus/ipp_schema/ipp_columns.txt): 687 columns of 35 tables. None
    missing, none narrower, each nullability the IPP's unless docs/formats.md says why."""
    here = {
        (str(r["t"]), str(r["c"])): (str(r["ty"]), r["n"] == "YES")
        for r in await db.fetch_all(SCHEMA_COLUMNS)
    }
    columns = ipp_columns()
    assert (len(columns), len({c.table for c in columns})) == (687, 35)
    reasons = {key: reason for reason, keys in NOT_NULL_HERE.items() for key in keys}
    missing, narrower, undocumented, stale = [], [], [], set(reasons) | set(NULL_HERE)
    for c in columns:
        key = (c.table, c.name)
        if key not in here:
            missing.append(f"{c.table}.{c.name}")
            continue
        kind, null_able = here[key]
        if not _holds(c.type, kind) and key not in TYPE_DIFFERENCES:
            narrower.append(f"{c.table}.{c.name} {kind} (IPP: {c.type})")
        if null_able == (not c.not_null):
            continue
        reason = (reasons.get(key) or BY_COLUMN_NAME.get(c.name)) if not null_able else NULL_HERE.get(key)
        stale.discard(key)
        if reason is None:
            undocumented.append(f"{c.table}.{c.name} {'NULL' if null_able else 'NOT NULL'} here")
    assert (missing, narrower, undocumented, sorted(stale)) == ([], [], [], [])
    formats = (ROOT / "docs" / "formats.md").read_text()
    for reason in [*NOT_NULL_HERE, *TYPE_DIFFERENCES.values()]:
        assert reason in formats, f"docs/formats.md does not give the reason {reason!r}"


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


#: An IPP source tree (``ps-ipp/ipp-trunk-20250502``) to run its own queries from; its files
#: are not part of this project, so without one the test of the files themselves is skipped
#: and the conformance list below (written from them) is what is checked.
IPP_SOURCE = os.environ.get("IPP_SOURCE_DIR")
IPPTOOLS_QUERIES = Path(__file__).resolve().parent / "corpus" / "ipp_schema" / "ipptools_queries.toml"


def _ipptools_needs() -> list[dict[str, Any]]:
    with IPPTOOLS_QUERIES.open("rb") as fh:
        return list(tomllib.load(fh)["query"])


IPPTOOLS_FILES = sorted({q["file"] for q in _ipptools_needs()})


def test_the_conformance_list_names_sixty_ipptools_queries_of_the_kept_stages():
    assert len(IPPTOOLS_FILES) == 60
    tools = {name.split("_")[0] for name in IPPTOOLS_FILES}
    assert tools == {"chiptool", "camtool", "faketool", "warptool", "difftool", "stacktool", "disttool"}


@pytest.mark.parametrize("need", _ipptools_needs(), ids=lambda q: q["file"].removesuffix(".sql"))
async def test_the_joins_and_columns_an_ipptools_query_needs_are_in_this_schema(db, need: dict[str, Any]):
    """tests/corpus/ipp_schema/ipptools_queries.toml: each FROM clause of the IPP's query as
    it joins (USING, ON, aliases) with every column the file names through it; an ambiguous
    USING (warp -> fake -> camera by cam_id) or a missing table fails as it would for the tool."""
    columns = ", ".join(need["columns"]) or "1"
    await db.fetch_all(Query("ipp_needs", f"SELECT {columns} FROM {need['from']} LIMIT 0", need["file"]))


class _RolledBack(Exception):
    """Raised inside a transaction to roll a tool's statement back."""


def _as_the_tool_sends_it(text: str) -> str:
    """What ippTools sends for a query file, with the hooks it fills left empty: the
    @INNERCONSTRAINT@-style markers and ``%s`` hooks removed, quoted ``'%s'`` states given
    one, ``%lld`` ids a number; then its LIMIT appended to a SELECT."""
    text = re.sub(r"@[A-Z_]+@", "", text).rstrip().rstrip(";")
    text = text.replace("%lld", "0").replace("'%s'", "'error_cleaned'").replace("%s", "")
    return text


@pytest.mark.skipif(not IPP_SOURCE, reason="set IPP_SOURCE_DIR to an IPP source tree to run its queries")
@pytest.mark.parametrize("name", IPPTOOLS_FILES, ids=lambda n: n.removesuffix(".sql"))
async def test_the_ipp_s_own_tool_queries_run_unchanged_on_this_schema(db, name: str):
    """ippTools/share/<name> itself, as the tools send it: a SELECT with a LIMIT, an UPDATE
    or DELETE in a transaction that is rolled back."""
    path = Path(str(IPP_SOURCE)) / "ippTools" / "share" / name
    assert path.is_file(), f"{path}: not in the IPP source tree"
    sql = _as_the_tool_sends_it(path.read_text())
    if sql.lstrip().split(None, 1)[0].upper() == "SELECT":
        await db.fetch_all(Query("ipp_tool", sql + "\nLIMIT 1", name))
        return

    async def write(tx: Tx) -> None:
        await tx.execute(Query("ipp_tool", sql, name))
        raise _RolledBack

    with pytest.raises(_RolledBack):
        await db.transaction(write, name="ipp_tool")


TEXT_COLLATIONS = Query(
    "t_collations",
    "SELECT DISTINCT collation_name AS c FROM information_schema.columns "
    "WHERE table_schema = DATABASE() AND collation_name IS NOT NULL",
    "test",
)


async def test_every_text_column_has_the_collation_a_utf8mb4_client_gets(db):
    """ippTools/share/disttool_pending_raw.sql UNIONs columns with CAST(NULL AS CHAR(255)),
    which takes the connection's collation: utf8mb4_general_ci for a utf8mb4 client. A column
    of another utf8mb4 collation makes that an "Illegal mix of collations" (ascii keys mix)."""
    collations = {str(r["c"]) for r in await db.fetch_all(TEXT_COLLATIONS)}
    assert collations <= {"utf8mb4_general_ci", "ascii_general_ci", "ascii_bin"}, collations
    mixed = Query(
        "t_union",
        "SELECT TRIM(TRAILING '.fits' FROM uri) AS p, label FROM rawImfile JOIN chipRun USING (exp_id) "
        "UNION SELECT CAST(NULL AS CHAR(255)), 'x' LIMIT 1",
        "test",
    )
    await db.fetch_all(mixed)


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

        # Read as PS::IPP::Metadata::Config's parse_list reads it, every block is kept.
        assert [name for name, _ in _parse_list(text)] == ["dbversion", "camRun", "camProcessedExp"]

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


def _parse_list(text: str) -> list[tuple[str, Block]]:
    """PS-IPP-Metadata-Config/lib/PS/IPP/Metadata/Config.pm ``parse_list``: the lines are cut
    into chunks, each ending at a line that is only ``END``; a chunk is kept only if it parses
    alone into exactly one entry, a METADATA. A chunk it would drop fails the test."""
    kept, chunk = [], []
    for line in text.split("\n"):
        chunk.append(line)
        if line.strip() == "END":
            doc = mdc.loads("\n".join(chunk) + "\n", "chunk")
            assert len(doc.entries) == 1 and isinstance(doc.entries[0][1], Block), chunk[:3]
            kept.append((doc.entries[0][0], doc.entries[0][1]))
            chunk = []
    assert not "".join(chunk).strip(), f"text after the last END: {chunk[:3]}"
    return kept


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


# -- the DataStore as the IPP's own client and server see it -------------------------------
#
# Facts from DataStore/lib/DataStore/Utils.pm (the client's field rules and known types),
# DataStore/lib/DataStore/{Product,FileSet,File}/Parser.pm (what a line needs, or the client
# drops it), DataStoreServer/scripts/{dsrootindex,dsprodindex,dsfsindex,tabledefs.sql} (how
# the IPP's server prints its listings) and ippScripts/scripts/{dist_make_fileset.pl,
# dist_advancerun.pl} (what a distribution fileset holds).

# Utils.pm: $STD_FIELD, $TIME_FIELD, $BYTE_FIELD, $MD5_FIELD (digits written out as [0-9]:
# Python's \d also takes other scripts' digits).
IPP_STD_FIELD = re.compile(r"^[A-z0-9\-+_.: ]+\Z")
IPP_TIME_FIELD = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
IPP_BYTE_FIELD = re.compile(r"^[0-9]+\Z")
IPP_MD5_FIELD = re.compile(r"^[0-9a-f]{32}\Z")
# Utils.pm: %KNOWN_PRODUCT_TYPES, %KNOWN_FILESET_TYPES, %KNOWN_FILE_TYPES
IPP_PRODUCT_TYPES = {
    "image", "dump", "psrequest", "psresults", "table", "ipp-dist", "ipp-misc", "dqresults",
    "IPP-MOPS", "IPP-PSPS", "PSRESULTS",
}  # fmt: skip
IPP_FILESET_TYPES = {
    "OBJECT", "BIAS", "DARK", "SKYFLAT", "DOMEFLAT", "OOF", "SHACKHARTMANN", "PSREQUEST",
    "PSRESULTS", "IPP-MOPS", "XRAY", "FOCUS", "MOPS_DETECTABILITY_QUERY",
    "MOPS_DETECTABILITY_RESPONSE", "MOPS_TRANSIENT_DETECTIONS", "LED", "notset", "IPP_PSPS",
    "IPP-DIST", "table",
}  # fmt: skip
IPP_FILE_TYPES = {
    "chip", "psrequest", "psresults", "pstamp", "chipproc", "warp", "stack", "diff", "ipp-mops",
    "table", "text", "xml", "tgz", "fits", "IPP-MOPS", "IPP-PSPS", "ipp-psps", "notset",
}  # fmt: skip
# dsrootindex and dsfsindex: their header lines and where each fixed-width field ends
ROOT_HEADER = "# productID  |Most recent |Time registered     |type     |Description                     |"
FILE_HEADER = "# fileID          |bytes   |md5sum                          |type        |"


def _ipp_fields(line: str) -> list[str]:
    """Perl's ``split /\\|/, $line``: trailing empty fields are dropped; then each field
    stripped, as the parsers do."""
    fields = line.split("|")
    while fields and fields[-1] == "":
        fields.pop()
    return [f.strip() for f in fields]


def _ipp_rows(text: str, minimum: int) -> list[list[str]]:
    """The lines an IPP parser keeps: not blank, not a comment, at least ``minimum``
    fields, none holding '#'. A line it would drop fails the test, naming it."""
    rows = []
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = _ipp_fields(line)
        assert len(fields) >= minimum, f"not enough fields: {line!r}"
        assert not any("#" in f for f in line.split("|")), f"a field holds '#': {line!r}"
        rows.append(fields)
    return rows


def ipp_products(text: str) -> dict[str, list[str]]:
    """Product/Parser.pm: product, last fileset, time, type, description."""
    rows = {}
    for product, last, when, kind, *rest in _ipp_rows(text, 5):
        assert IPP_STD_FIELD.match(last), f"last fileset {last!r} of {product}"
        assert IPP_TIME_FIELD.match(when), f"time {when!r} of {product}"
        assert kind in IPP_PRODUCT_TYPES, f"product type {kind!r} of {product}"
        rows[product] = [last, when, kind, *rest]
    return rows


def ipp_filesets(text: str) -> dict[str, list[str]]:
    """FileSet/Parser.pm: fileset, time, type, then the product's columns."""
    rows = {}
    for name, when, kind, *extra in _ipp_rows(text, 3):
        assert IPP_STD_FIELD.match(name) and IPP_STD_FIELD.match(kind), name
        assert IPP_TIME_FIELD.match(when), f"time {when!r} of {name}"
        assert kind in IPP_FILESET_TYPES, f"fileset type {kind!r} of {name}"
        rows[name] = [when, kind, *extra]
    return rows


def ipp_files(text: str) -> dict[str, list[str]]:
    """File/Parser.pm: file id, bytes, md5sum (or empty), type, then the type's columns."""
    rows = {}
    for name, size, md5, kind, *extra in _ipp_rows(text, 4):
        assert IPP_STD_FIELD.match(name) and IPP_STD_FIELD.match(kind), name
        assert IPP_BYTE_FIELD.match(size), f"bytes {size!r} of {name}"
        assert IPP_MD5_FIELD.match(md5) or not md5.strip(), f"md5sum {md5!r} of {name}"
        assert kind in IPP_FILE_TYPES, f"file type {kind!r} of {name}"
        rows[name] = [size, md5, kind, *extra]
    return rows


def _bars(line: str) -> list[int]:
    return [i for i, c in enumerate(line) if c == "|"]


def _add_dist_product(site: SurveySite) -> None:
    """dsprodtool --add ipp-dist with the labels dist_make_fileset.pl's filesets carry (--ps0..3)."""
    added = ippctl(
        site, "ds", "product", "add", "ipp-dist", "--type", "ipp-dist", "--description", "IPP distribution",
        "--ps0", "target_id", "--ps1", "stage", "--ps2", "stage_id", "--ps3", "exp_name",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


_sites = itertools.count()


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for survey in survey_site(
        test_dsn, f"cf{next(_sites)}", tmp_path / "ipp", exposures=2, chips=2, seed=5
    ):
        yield survey


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, f"{url}: {response.status}"
        return await response.text()


async def test_a_distribution_fileset_is_listed_as_the_ipp_s_server_lists_it_and_its_client_reads_it_all(
    site, sdb, tmp_path
):
    """dsprodtool --add with --ps0..3; dist_make_fileset.pl's fileset (type IPP-DIST, dbinfo
    and dirinfo as text with their component, bundles as tgz with theirs); the three
    listings in dsrootindex / dsprodindex / dsfsindex layout, every line kept by the client."""
    _add_dist_product(site)
    # seed 003's example of a PSPS product, which has no fileset yet
    psps = ippctl(
        site,
        "ds",
        "product",
        "add",
        "PSPS_HAF",
        "--type",
        "IPP-PSPS",
        "--description",
        "Heather PSPS testing",
    )
    assert psps.returncode == 0 and "PSPS_HAF (IPP-PSPS) added" in psps.stdout, psps.stderr
    queued = ippctl(site, "dist", "queue", "--stage", "chip", "--id", "1", "--product", "ipp-dist")
    assert queued.returncode == 0, queued.stderr
    port = free_port()
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        await eventually(lambda: _fileset_of(sdb), timeout_s=90, what="the shipped fileset")
        base = f"http://127.0.0.1:{port}/ds"
        root = await _get(f"{base}/index.txt")
        product = await _get(f"{base}/ipp-dist/index.txt")
        (name,) = ipp_filesets(product)
        listing = await _get(f"{base}/ipp-dist/{name}/index.txt")
        dirinfo = await _get(f"{base}/ipp-dist/{name}/dirinfo.chip.1.mdc")
    finally:
        server.kill()

    lines = root.splitlines()
    assert lines[0] == ROOT_HEADER
    products = ipp_products(root)
    # dsrootindex: "none" for no fileset; ordered by type; %-13s|%-12s|%-20s|%-9s|%-32s|
    assert products["PSPS_HAF"][:1] == ["none"] and products["PSPS_HAF"][2:] == [
        "IPP-PSPS",
        "Heather PSPS testing",
    ]
    assert products["ipp-dist"][0] == name and products["ipp-dist"][2] == "ipp-dist"
    # ORDER BY type, compared without case as MariaDB's default collation does (ipp-dist, IPP-PSPS)
    assert [line.split("|")[0].strip() for line in lines[1:]] == ["ipp-dist", "PSPS_HAF"]
    assert _bars(lines[2]) == [13, 26, 47, 57, 90]  # PSPS_HAF: every value fits its width

    (fileset,) = ipp_filesets(product).values()
    exp_name = name.split(".")[0]
    assert fileset[1:] == ["IPP-DIST", "null", "chip", "1", exp_name]  # queued by hand: no target
    # dsprodindex: the labels, every column as wide as its widest label or value
    labels, line = product.splitlines()
    assert [f.strip() for f in labels[1:].split("|")[:-1]] == [
        "filesetID", "time registered", "type", "target_id", "stage", "stage_id", "exp_name",
    ]  # fmt: skip
    assert _bars(labels) == _bars(line)

    files = ipp_files(listing)
    head = listing.splitlines()[0]
    assert head == FILE_HEADER + "component|"  # tabledefs.sql: text and tgz have a component column
    assert files["dbinfo.chip.1.mdc"][2:] == ["text", "dbinfo"]
    assert files["dirinfo.chip.1.mdc"][2:] == ["text", "dirinfo"]
    chips = {str(r["class_id"]): str(r["path_base"]) for r in await sdb.fetch_all(CHIPS, id=1)}
    bundles = {n: row for n, row in files.items() if n.endswith(".tgz")}
    assert {row[2] for row in bundles.values()} == {"tgz"}
    # one bundle per chip; the run's own files (mosaics) travel in one more, under the
    # component the IPP gives a run's own products (disttool_pending_camera.sql, receive_file.pl)
    assert {row[3] for row in bundles.values()} == {*chips, "exposure"}
    for n, row in bundles.items():
        if row[3] != "exposure":
            assert n.endswith(f".{row[3]}.tgz")  # basename(path_base).$class_id.tgz
    # %-18s|%-8s|%-32s|%-12s|, then %-8s| per type column
    short = [line for line in listing.splitlines()[1:] if len(line.split("|")[0]) <= 18]
    assert short and all(_bars(line) == [18, 27, 60, 73, 82] for line in short)

    # dist_advancerun.pl: destdir (the workdir without scheme and volume), then per
    # component the directory of its products relative to destdir
    doc = mdc.loads(dirinfo, "dirinfo")
    assert [name for name, _ in _parse_list(dirinfo)] == ["destdir", "components"]
    destdir = _block(doc, "destdir").value("destdir")
    assert isinstance(destdir, str) and not destdir.startswith(("neb:", "/"))
    components = _block(doc, "components")
    # receive_file.pl places a bundle only where the dirinfo names its component's directory
    assert {n for n, _ in components} == {*chips, "exposure"}
    assert components.value("exposure") == components.value(sorted(chips)[0])
    for class_id, path_base in chips.items():
        assert path_base.endswith(f"{destdir}/{components.value(class_id)}/{path_base.rsplit('/', 1)[-1]}")


CHIPS = Query("t_chips", "SELECT class_id, path_base FROM chipProcessedImfile WHERE chip_id = %(id)s", "test")
FILESET = Query("t_fs", "SELECT fileset_name FROM distRun WHERE state = 'full'", "test")
DS_FILESETS = Query(
    "t_dsfs",
    "SELECT s.fileset_name, s.type, p.type AS product_type FROM dsFileset s "
    "JOIN dsProduct p ON p.prod_id = s.prod_id WHERE p.prod_name = %(product)s",
    "test",
)


async def _fileset_of(sdb: Database) -> object:
    return await sdb.fetch_one(FILESET)


async def test_a_published_batch_is_a_fileset_of_the_config_s_datastore_type_read_by_the_ipp_client(
    site, sdb
):
    """seed 003: datastore_type defaults to IPP_PSPS and is the type the batches carry; the
    product is an IPP-PSPS one. The FITS file is of type fits, which has no type columns
    (tabledefs.sql), and the manifest text with its component: two dsfsindex headers."""
    configure_loading(site, "cf")
    shown = ippctl(site, "psps", "config", "list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [c["datastore_type"] for c in json.loads(shown.stdout) if c["name"] == "cf"] == ["IPP_PSPS"]
    init = ippctl(site, "psps", "init", "cf")
    assert init.returncode == 0, init.stderr
    (row,) = await sdb.fetch_all(DS_FILESETS, product="PSPS_cf")
    assert (row["type"], row["product_type"]) == ("IPP_PSPS", "IPP-PSPS")
    listing = await datastore.fileset_listing(sdb, "PSPS_cf", row["fileset_name"])
    files = ipp_files(listing)
    assert sorted(r[2:] for r in files.values()) == [["fits"], ["text", "manifest"]]
    headers = [line for line in listing.splitlines() if line.startswith("#")]
    assert headers == [FILE_HEADER, FILE_HEADER + "component|"]
    # another known type is taken and used; one the IPP's client does not know is refused
    configure_loading(site, "cf2", "datastore_type=table")
    assert ippctl(site, "psps", "init", "cf2").returncode == 0
    (other,) = await sdb.fetch_all(DS_FILESETS, product="PSPS_cf2")
    assert other["type"] == "table"
    bad = ippctl(site, "psps", "config", "set", "cf2", "datastore_type=psps_batches")
    assert bad.returncode != 0 and "datastore_type" in bad.stderr and "IPP_PSPS" in bad.stderr


async def test_ippctl_ds_product_add_takes_dsprodtool_s_arguments_and_refuses_what_the_client_would_drop(
    db, test_dsn, tmp_path
):
    """dsprodtool --add NAME --type T --description D [--ps0..7]: type and description
    required; a type outside Utils.pm's %KNOWN_PRODUCT_TYPES, or a description holding '#'
    (Product/Parser.pm drops the line), is refused with the reason."""

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.ctl.main", "ds", *args],
            cwd=ROOT,
            env={**agent_env(test_dsn), "IPP_VAR_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = ctl(
        "product", "add", "PSPS_X", "--type", "IPP-PSPS", "--description", "PSPS testing", "--ps0", "batch"
    )
    assert ok.returncode == 0, ok.stderr
    prod = await datastore.product(db, "PSPS_X")
    assert (prod["type"], prod["description"], prod["prod_col_0"]) == ("IPP-PSPS", "PSPS testing", "batch")
    old = ctl("product", "add", "d", "--type", "dist", "--description", "old name")
    assert old.returncode == 0 and (await datastore.product(db, "d"))["type"] == "ipp-dist"
    unknown = ctl("product", "add", "y", "--type", "psps-x", "--description", "x")
    assert unknown.returncode == 2 and "--type" in unknown.stderr
    missing = ctl("product", "add", "y", "--type", "IPP-PSPS")
    assert missing.returncode == 2 and "--description" in missing.stderr
    hashed = ctl("product", "add", "y", "--type", "IPP-PSPS", "--description", "batch #1")
    assert hashed.returncode != 0 and "'#'" in hashed.stderr
    gap = ctl("product", "add", "y", "--type", "IPP-PSPS", "--description", "x", "--ps0", "a", "--ps2", "c")
    assert gap.returncode != 0 and "without gaps" in gap.stderr
    assert await db.fetch_one(Q.ds_product_get, name="y") is None


def test_a_dsfsindex_listing_with_a_header_per_type_and_short_lines_is_read():
    """dsfsindex prints the header again when the type's columns change, and a type column
    only when it has a value; File/Parser.pm reads any line of 4 fields or more."""
    md5 = "0123456789abcdef0123456789abcdef"
    text = (
        f"{FILE_HEADER}\n"
        f"{'B00000007.fits':<18}|{'2880':<8}|{md5}|{'fits':<12}|\n"
        f"{FILE_HEADER}component|\n"
        f"{'B00000007.mdc':<18}|{'12':<8}|{md5}|{'text':<12}|{'manifest':<8}|\n"
        f"{'notes.txt':<18}|{'3':<8}|{md5}|{'text':<12}|\n"
    )
    files = datastore.parse_files(text, "t")
    assert [(f.name, f.type, f.component) for f in files] == [
        ("B00000007.fits", "fits", None),
        ("B00000007.mdc", "text", "manifest"),
        ("notes.txt", "text", None),
    ]
    with pytest.raises(datastore.DataStoreError, match="5 fields, the header has 4"):
        datastore.parse_files(f"{FILE_HEADER}\nx|1|{md5}|fits|extra|\n", "t")


async def test_upgrading_gives_what_earlier_versions_registered_the_ipp_s_type_names(server_dsn):
    """A DataStore registered before schema 11 (types dist, psps, dbinfo, manifest) reads
    after the upgrade as the IPP's client needs it: ipp-dist / IPP-PSPS products, IPP-DIST
    and IPP_PSPS filesets, text files with their component, tgz files with theirs."""
    dsn = parse_dsn(server_dsn).with_database(f"ipp_t11_{os.getpid()}")
    settings = load_settings(environ={}, db_dsn=dsn.url(), **FAST)
    await create_database(settings, dsn)
    db = await Database.connect(settings, dsn)
    try:
        for m in migrations()[:10]:
            await apply_statements(db, m.statements(), name=m.name)
            await db.execute(Q.record_migration, version=m.version, name=m.name)
        await db.execute(Q.set_dbversion, version=10)
        for statement in LEGACY:
            await db.execute(Query("t_legacy", statement, "test"))
        assert [m.version for m in await upgrade(db)] == list(range(11, CODE_SCHEMA_VERSION + 1))
        products = {r["prod_name"]: r["type"] for r in await db.fetch_all(Q.ds_products)}
        assert products == {"ipp-dist": "ipp-dist", "PSPS_a": "IPP-PSPS"}
        sets = await db.fetch_all(Query("t_s", "SELECT fileset_name, type FROM dsFileset ORDER BY 1", "test"))
        assert [(r["fileset_name"], r["type"]) for r in sets] == [
            ("B00000001", "IPP_PSPS"),
            ("o1.chip.1.1.1", "IPP-DIST"),
        ]
        listing = await datastore.fileset_listing(db, "ipp-dist", "o1.chip.1.1.1")
        assert {n: r[2:] for n, r in ipp_files(listing).items()} == {
            "dbinfo.chip.1.mdc": ["text", "dbinfo"],
            "o1.ch.1.XY01.tgz": ["tgz", "XY01"],
        }
        batch = ipp_files(await datastore.fileset_listing(db, "PSPS_a", "B00000001"))
        assert {n: r[2:] for n, r in batch.items()} == {
            "B00000001.fits": ["fits"],
            "B00000001.mdc": ["text", "manifest"],
        }
        config = await db.fetch_one(Query("t_c", "SELECT datastore_type FROM psps_config", "test"))
        assert config == {"datastore_type": "IPP_PSPS"}
    finally:
        await db.close()
        await drop_database(settings, dsn)


_MD5 = "0123456789abcdef0123456789abcdef"
LEGACY = [
    "INSERT INTO dsProduct (prod_id, prod_name, type, description) VALUES (1, 'ipp-dist', 'dist', NULL), "
    "(2, 'PSPS_a', 'psps', 'batches')",
    "INSERT INTO dsFileset (fileset_id, prod_id, fileset_name, reg_time, type) VALUES "
    "(1, 1, 'o1.chip.1.1.1', UTC_TIMESTAMP(), 'notset'), (2, 2, 'B00000001', UTC_TIMESTAMP(), 'psps')",
    f"INSERT INTO dsFile (fileset_id, file_name, bytes, md5sum, type, uri) VALUES "
    f"(1, 'dbinfo.chip.1.mdc', 10, '{_MD5}', 'dbinfo', 'neb://any/a'), "
    f"(1, 'o1.ch.1.XY01.tgz', 10, '{_MD5}', 'tgz', 'neb://any/b'), "
    f"(2, 'B00000001.fits', 10, '{_MD5}', 'fits', 'neb://any/c'), "
    f"(2, 'B00000001.mdc', 10, '{_MD5}', 'manifest', 'neb://any/d')",
    "INSERT INTO distRun (dist_id, stage, stage_id, product, fileset_name, state) VALUES "
    "(1, 'chip', 1, 'ipp-dist', 'o1.chip.1.1.1', 'full')",
    "INSERT INTO distComponent (dist_id, component, name) VALUES (1, 'XY01', 'o1.ch.1.XY01.tgz')",
    "INSERT INTO psps_config (name, datastore_product, datastore_type, datastore_publish, dvo_label, "
    "dvo_location, ra_min, ra_max, dec_min, dec_max, box_size_deg, epoch, survey_id, batch_types, "
    "test_mode, deletion_policy, active) VALUES ('a', 'PSPS_a', 'psps', 1, '', '', 0, 360, -90, 90, 1, "
    "'2009-01-01', 0, 'P2', 0, '', 1)",
]


# -- DataStore registration by the IPP's own scripts, listed by its own index scripts ------
#
# The statements of DataStoreServer/scripts/dsprodtool (--add) and dsreg (--add, --del), as
# they send them (their placeholders here as named parameters), on this project's tables.

DSPRODTOOL_ADD = (
    "INSERT INTO dsProduct (prod_name, last_update, type, description,  prod_col_0, prod_col_1, "
    "prod_col_2, prod_col_3, prod_col_4, prod_col_5, prod_col_6, prod_col_7)VALUES(%(p)s, "
    "UTC_TIMESTAMP(), %(t)s, %(d)s , NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
)
DSREG_ADD = (
    ("prod", "SELECT prod_id FROM dsProduct WHERE prod_name = %(p)s"),
    ("exists", "SELECT fileset_id FROM dsFileset WHERE fileset_name = %(f)s AND prod_id = %(id)s"),
    (
        "fileset",
        "INSERT into dsFileset (prod_id, fileset_name, reg_time, type, prod_col_0, prod_col_1, prod_col_2, "
        "prod_col_3, prod_col_4, prod_col_5,  prod_col_6, prod_col_7) VALUES(%(id)s, %(f)s, UTC_TIMESTAMP(), "
        "%(t)s, %(c0)s, %(c1)s, NULL, NULL, NULL, NULL, NULL, NULL)",
    ),
    ("fsid", "SELECT fileset_id FROM dsFileset WHERE fileset_name = %(f)s AND prod_id = %(id)s"),
    (
        "file",
        "INSERT INTO dsFile (fileset_id, file_id, file_name, bytes, md5sum, type, type_col_0, type_col_1, "
        "type_col_2, type_col_3, type_col_4, type_col_5, type_col_6, type_col_7) VALUES(%(fs)s, 0, %(n)s, "
        "%(b)s, %(m)s, %(ft)s, %(tc0)s, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    ),
    ("last", "UPDATE dsProduct SET last_update = UTC_TIMESTAMP(), last_fs = %(f)s WHERE prod_id = %(id)s"),
)
DSREG_DEL = (
    "DELETE from dsFile where fileset_id = %(fs)s",
    "DELETE from dsFileset where fileset_id = %(fs)s",
    "SELECT fileset_name from dsFileset WHERE prod_id = %(id)s ORDER BY reg_time DESC LIMIT 1",
    "UPDATE dsProduct SET last_fs = %(f)s WHERE prod_id = %(id)s",
)


def _dsq(sql: str) -> Query:
    return Query("ipp_ds_script", sql, "DataStoreServer/scripts")


async def _dsreg_add(
    db: Database, product: str, fileset: str, files: list[tuple[str, int, str, str, str | None]]
) -> int:
    """dsreg --add in one transaction, as it runs: the fileset, each file, the product's last_fs."""
    prod_id = int(await db.fetch_val(_dsq(DSREG_ADD[0][1]), p=product))

    async def add(tx: Tx) -> int:
        assert await tx.fetch_one(_dsq(DSREG_ADD[1][1]), f=fileset, id=prod_id) is None
        await tx.execute(_dsq(DSREG_ADD[2][1]), id=prod_id, f=fileset, t="notset", c0="7", c1="chip")
        fs_id = int(await tx.fetch_val(_dsq(DSREG_ADD[3][1]), f=fileset, id=prod_id))
        for name, size, md5, kind, component in files:
            await tx.execute(_dsq(DSREG_ADD[4][1]), fs=fs_id, n=name, b=size, m=md5, ft=kind, tc0=component)
        await tx.execute(_dsq(DSREG_ADD[5][1]), f=fileset, id=prod_id)
        return fs_id

    return await db.transaction(add, name="dsreg_add")


async def test_the_ipp_s_registration_statements_work_here_and_its_index_scripts_print_what_is_served(
    site, sdb, tmp_path
):
    """dsprodtool --add and dsreg --add/--del on this project's tables (6 statements), and the
    IPP's dsrootindex / dsprodindex / dsfsindex over the same database (tests/ipp_dsindex.py)
    byte for byte against dist_server's listings: a product of ippctl, one of dsprodtool
    with no fileset yet, a fileset of dist_server and one of dsreg."""
    await sdb.execute(_dsq(DSPRODTOOL_ADD), p="ipp-misc", t="ipp-misc", d="registered by dsprodtool")
    _add_dist_product(site)
    empty = ippctl(
        site, "ds", "product", "add", "PSPS_E", "--type", "IPP-PSPS", "--description", "no batch yet"
    )
    assert empty.returncode == 0, empty.stderr
    queued = ippctl(site, "dist", "queue", "--stage", "chip", "--id", "1", "--product", "ipp-dist")
    assert queued.returncode == 0, queued.stderr
    md5 = "0123456789abcdef0123456789abcdef"
    files = [("o9.ch.1.XY01.tgz", 2048, md5, "tgz", "XY01"), ("notes.txt", 12, md5, "text", None)]
    port = free_port()
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        shipped = str(
            (await eventually(lambda: _fileset_of(sdb), timeout_s=90, what="the fileset"))["fileset_name"]
        )
        await _dsreg_add(sdb, "ipp-dist", "o9.chip.7.1.2", files)
        await _dsreg_add(sdb, "ipp-misc", "misc.1", files[1:])
        base = f"http://127.0.0.1:{port}/ds"
        assert await _get(f"{base}/index.txt") == await ipp_dsindex.dsrootindex(sdb)
        for product in ("ipp-dist", "ipp-misc", "PSPS_E"):
            assert await _get(f"{base}/{product}/index.txt") == await ipp_dsindex.dsprodindex(sdb, product)
        after = await _get(f"{base}/ipp-dist/index.txt?{shipped}")
        assert after == await ipp_dsindex.dsprodindex(sdb, "ipp-dist", shipped) and "o9.chip.7.1.2" in after
        for product, name in (("ipp-dist", shipped), ("ipp-dist", "o9.chip.7.1.2"), ("ipp-misc", "misc.1")):
            served = await _get(f"{base}/{product}/{name}/index.txt")
            assert served == await ipp_dsindex.dsfsindex(sdb, product, name), name
            assert ipp_files(served)  # and the IPP's client keeps every line
        # a file dsreg registered lies in dsreg's own tree: named as not stored here
        async with aiohttp.ClientSession() as http, http.get(f"{base}/ipp-misc/misc.1/notes.txt") as r:
            assert r.status == 404 and "registered without a stored copy" in await r.text()
    finally:
        server.kill()
    # dsreg --del: the files, the fileset, and the product's most recent goes back
    prod_id = int(await sdb.fetch_val(_dsq(DSREG_ADD[0][1]), p="ipp-dist"))
    fs_id = int(await sdb.fetch_val(_dsq(DSREG_ADD[3][1]), f="o9.chip.7.1.2", id=prod_id))

    async def delete(tx: Tx) -> None:
        await tx.execute(_dsq(DSREG_DEL[0]), fs=fs_id)
        assert await tx.execute(_dsq(DSREG_DEL[1]), fs=fs_id) == 1
        newest = await tx.fetch_val(_dsq(DSREG_DEL[2]), id=prod_id)
        await tx.execute(_dsq(DSREG_DEL[3]), f=newest, id=prod_id)

    await sdb.transaction(delete, name="dsreg_del")
    assert (await datastore.product(sdb, "ipp-dist"))["last_fs"] == shipped
