"""Conformance with the IPP's own code, from facts of its public source.

The mdc reader: ``tests/corpus/ipp_mdc/`` holds files of this project's own, each following
one rule of the IPP's grammar (``PS-IPP-Metadata-Config/config_grammar.txt``) or one case of
its tests (``PS-IPP-Metadata-Config/t/04_type.t``, ``05_time.t``, ``06_multi.t``), named in
its first line. Every file under ``accept/`` must parse, every one under ``refuse/`` must be
refused with an error naming the file and the line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from shared.core.errors import MdcError
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar, Vector
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
