"""The mdc reader and writer (REFERENCE 4)."""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.errors import MdcError
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar, Vector

SAMPLE = """\
# a run export
dbversion  METADATA
   schema_version  S32  14
END
chipRun MULTI

chipRun  METADATA   # first
   chip_id         S64       14517
   state           STR       full
   label           STR       NULL
   dateobs         UTC       2009-04-15T03:02:12Z
   zpt             F32       24.51
   good            BOOL      T
   @bias F64 1.5 2.25, 3
END
chipRun  METADATA
   chip_id         S64       0x10
END
"""


def test_a_realistic_export_is_read_with_types_multi_vectors_and_nulls():
    doc = mdc.loads(SAMPLE)
    version = doc.get("dbversion")
    assert isinstance(version, Block) and version.value("schema_version") == 14
    runs = [r for r in doc.get_all("chipRun") if isinstance(r, Block)]
    assert len(runs) == 2 and doc.multi == ["chipRun"]
    first = runs[0]
    assert first.comment == "first"
    assert first.value("state") == "full" and first.value("label") is None
    assert first.value("dateobs") == datetime(2009, 4, 15, 3, 2, 12)
    assert first.value("zpt") == struct.unpack("f", struct.pack("f", 24.51))[0]
    assert first.value("good") is True
    assert first.get("bias") == Vector("F64", (1.5, 2.25, 3.0))
    assert runs[1].value("chip_id") == 16


def test_the_writer_uses_the_psLib_layout():
    block = Block()
    block.add("chip_id", Scalar("S64", 14517))
    block.add("zpt", Scalar("F32", 24.5, "zero point"))
    block.add("ra", Scalar("F64", 1 / 3))
    block.add("note", Scalar("STR", None))
    inner = Block()
    inner.add("x", Scalar("BOOL", False))
    block.add("sub", inner)
    assert mdc.dumps(block) == (
        "chip_id          S64       14517\n"
        "zpt              F32       24.5             # zero point\n"
        "ra               F64       0.333333333333333\n"
        "note             STR       NULL\n"
        "sub  METADATA\n"
        "   x                BOOL      F\n"
        "END\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a  S32  12\nb  S8  300\n", ":2: b: 300 is outside the S8 range"),
        ("a  S32  twelve\n", ":1: a: 'twelve' is not a S32 integer"),
        ("a  F64  1e\n", ":1: a: '1e' is not a F64 number"),
        ("a  F32  1e60\n", ":1: a: 1e60 is outside the F32 range"),
        ("a  BOOL  maybe\n", ":1: a: 'maybe' is not a BOOL"),
        ("a  UTC  yesterday\n", ":1: a: 'yesterday' is not an ISO 8601 UTC time"),
        ("a  WIBBLE  1\n", ":1: a: unknown type 'WIBBLE'"),
        ("a  S32\n", ":1: a: missing value"),
        ("a\n", ":1: a: missing type"),
        ("b METADATA\n  x S32 1\n", ":1: METADATA block 'b' has no END"),
        ("END\n", ":1: END without an open METADATA block"),
        ("$x  S32  1\n", ":1: bad name '$x'"),
        ("@v STR a b\n", ":1: v: vector type must be one of"),
        ("a MULTI\na MULTI\n", ":2: a: MULTI declared twice"),
        ("__import__('os')  S32  1\n", ":1: bad name"),
    ],
)
def test_bad_input_gives_a_line_numbered_error(text, message):
    with pytest.raises(MdcError, match=re.escape(message)):
        mdc.loads(text, "dbinfo.chip.1.mdc")


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path):
    path = tmp_path / "bad.mdc"
    path.write_bytes(b"a STR \xff\xfe\n")
    with pytest.raises(MdcError, match=r"bad.mdc: not UTF-8"):
        mdc.load(path)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a # b", "contains #"),
        ("two\nlines", "line break"),
        (" padded", "leading or trailing white space"),
        ("null", "read back as NULL"),
    ],
)
def test_strings_mdc_cannot_represent_are_refused_not_changed(value, problem):
    block = Block()
    block.add("note", Scalar("STR", value))
    with pytest.raises(MdcError, match=f"note: .*{problem}"):
        mdc.dumps(block)


def test_values_of_the_wrong_type_or_range_are_refused_on_write():
    for item in (
        Scalar("S8", 128),
        Scalar("U16", -1),
        Scalar("S32", "7"),
        Scalar("BOOL", 1),
        Scalar("UTC", "2020-01-01"),
    ):
        block = Block()
        block.add("x", item)
        with pytest.raises(MdcError, match="x: "):
            mdc.dumps(block)


# -- the round trip, over generated documents ----------------------------------------------

names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,20}\Z").filter(lambda n: n != "END")
safe_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="#"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.lower() != "null")
# Strings mdc can carry: padded ones are refused by the writer (tested above), blank ones are
# written as NULL.
strings = st.one_of(st.none(), safe_text, st.lists(safe_text, min_size=2, max_size=3).map(" ".join)).filter(
    lambda s: s is None or s == s.strip() or not s.strip()
)
comments = st.one_of(st.none(), safe_text)
times = st.one_of(st.none(), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))


def f32(x: float) -> float:
    return float(mdc._Reader("").parse_float("F32", f"{x:.7g}", "x"))


def f64(x: float) -> float:
    return float(f"{x:.15g}")


def int_scalar(kind: str) -> st.SearchStrategy[Scalar]:
    low, high = mdc.INT_RANGES[kind]
    return st.builds(Scalar, st.just(kind), st.integers(low, high), comments)


finite = st.floats(allow_nan=False, allow_infinity=True, width=32)
scalars = st.one_of(
    *(int_scalar(k) for k in mdc.INT_RANGES),
    st.builds(Scalar, st.just("F32"), finite.map(f32), comments),
    st.builds(Scalar, st.just("F64"), st.floats(allow_nan=False).map(f64), comments),
    st.builds(Scalar, st.just("BOOL"), st.booleans(), comments),
    st.builds(Scalar, st.just("STR"), strings, comments),
    st.builds(Scalar, st.sampled_from(["UTC", "TAI"]), times, comments),
)
vectors = st.one_of(
    st.builds(
        Vector, st.just("S32"), st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5).map(tuple), comments
    ),
    st.builds(
        Vector, st.just("F64"), st.lists(st.floats(allow_nan=False).map(f64), max_size=5).map(tuple), comments
    ),
)


def build_block(children: list[tuple[str, object]], multi_names: list[str], comment: str | None) -> Block:
    block = Block(comment=comment)
    for name, item in children:
        if any(n == name for n, _ in block.entries):
            continue
        block.add(name, item)  # type: ignore[arg-type]
    for name in multi_names:
        if name in {n for n, _ in block.entries} and name not in block.multi:
            block.add(name, Block())
    return block


blocks = st.recursive(
    st.builds(
        build_block,
        st.lists(st.tuples(names, st.one_of(scalars, vectors)), max_size=6),
        st.just([]),
        comments,
    ),
    lambda inner: st.builds(
        build_block,
        st.lists(st.tuples(names, st.one_of(scalars, vectors, inner)), max_size=6),
        st.lists(names, max_size=2),
        comments,
    ),
    max_leaves=25,
)


def _without_root_comment(block: Block) -> Block:
    block.comment = None  # the top level has no line of its own to carry a comment
    return block


@settings(max_examples=300, deadline=None)
@given(blocks.map(_without_root_comment))
def test_every_document_round_trips(doc: Block):
    text = mdc.dumps(doc)
    again = mdc.loads(text)
    assert _normal(again) == _normal(doc)
    assert mdc.dumps(again) == text


def _normal(block: Block) -> object:
    """Comparable form: NaN-free by construction, empty strings read back as NULL."""

    def item(x: object) -> object:
        if isinstance(x, Scalar | Vector) and x.comment is not None:
            x = dataclasses.replace(x, comment=x.comment.strip() or None)
        if isinstance(x, Block):
            return _normal(x)
        if isinstance(x, Scalar) and x.type == "STR" and isinstance(x.value, str):
            return Scalar("STR", x.value if x.value.strip() else None, x.comment)
        if isinstance(x, Scalar) and isinstance(x.value, float) and math.isnan(x.value):
            return ("nan", x.type)
        return x

    comment = block.comment.strip() or None if block.comment else None
    return ([(n, item(i)) for n, i in block.entries], sorted(block.multi), comment)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_either_parses_or_raises_mdcerror(text: str):
    try:
        mdc.loads(text)
    except MdcError as exc:
        assert str(exc).startswith("<mdc>:")
