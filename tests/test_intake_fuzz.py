"""A bounded fuzzing campaign of the mirror's intake, in process: dbinfo texts (a good export,
mutated line by line) through the importer's reader, and bundles (tar members of any name,
kind and size, with any compression) through the unpacker. Every case either passes or gives
the project's own error naming the input; nothing is ever written outside the staging
directory, and nothing is left behind after a refusal. The number of cases run is printed
(``-s``) and checked."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.dist_client import read_dbinfo
from shared.core.errors import IppError
from shared.distribution import bundles
from tests.test_dist_bad_input import dbinfo

RUNS = {"dbinfo": 0, "bundle": 0}
GOOD = dbinfo().decode().splitlines()
WORDS = st.sampled_from(
    [
        "S64",
        "STR",
        "F32",
        "UTC",
        "METADATA",
        "END",
        "MULTI",
        "NULL",
        "nan",
        "-1",
        "99999999999999999999",
        "9999-12-31T23:59:59-05:00",
        "../..",
        "neb://any/../x",
        "goto_purged",
        "\xff",
        "#",
        "@v",
        "chipRun",
    ]
)


@st.composite
def mutated_dbinfo(draw: st.DrawFn) -> str:
    lines = list(GOOD)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "word", "text"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "word":
            parts = lines[i].split()
            if parts:
                parts[draw(st.integers(0, len(parts) - 1))] = draw(WORDS)
            lines[i] = "   ".join(parts)
        else:
            lines[i] = draw(st.text(max_size=60))
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_dbinfo())
def test_any_dbinfo_is_read_or_refused_with_our_error(text: str) -> None:
    RUNS["dbinfo"] += 1
    try:
        info = read_dbinfo(text, "fuzz/dbinfo.chip.1.mdc", "any")
    except IppError as exc:  # one line that says what is wrong
        assert str(exc).strip() and "\n" not in str(exc), repr(exc)
        return
    assert info.run_id is not None and info.stage


MEMBER_NAMES = st.one_of(
    st.sampled_from(
        [
            "./o1.1.ch.1.XY33.fits",
            "./",
            ".",
            "../x",
            "/etc/x",
            "./a/b",
            "./a\nb",
            "./" + "x" * 300,
            "./o1.1.ch.1.XY33.log",
        ]
    ),
    st.text(min_size=1, max_size=20).map(lambda s: "./" + s),
)
KINDS = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.FIFOTYPE,
        tarfile.GNUTYPE_SPARSE,
    ]
)


@st.composite
def bundle(draw: st.DrawFn) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for _ in range(draw(st.integers(0, 6))):
            info = tarfile.TarInfo(draw(MEMBER_NAMES))
            info.type = draw(KINDS)
            data = (
                draw(st.binary(max_size=200))
                if info.type in (tarfile.REGTYPE, tarfile.GNUTYPE_SPARSE)
                else b""
            )
            info.size = len(data)
            info.linkname = draw(st.sampled_from(["", "/etc/passwd", "../x"]))
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, max(0, len(raw) - 1))))
    return raw if cut is None else raw[:cut]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundle())
def test_any_bundle_unpacks_inside_staging_or_is_refused_leaving_nothing(data: bytes) -> None:
    RUNS["bundle"] += 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "b.tgz").write_bytes(data)
        into = root / "x"
        limits = bundles.UnpackLimits(max_members=4, max_bytes=600)
        try:
            written = bundles.extract(root / "b.tgz", into, limits)
        except IppError:
            assert not [p for p in into.rglob("*") if not p.is_dir()]
            written = {}
        assert all(p.parent == into and p.is_file() and not p.is_symlink() for p in written)
        outside = {p for p in root.rglob("*")} - {root / "b.tgz", into} - set(into.rglob("*"))
        assert not outside


def test_the_campaign_ran_its_cases() -> None:
    """Runs after the two above (file order): report and check how many cases ran."""
    print(f"intake fuzzing: {RUNS['dbinfo']} dbinfo cases, {RUNS['bundle']} bundle cases")
    assert RUNS["dbinfo"] >= 100 and RUNS["bundle"] >= 100
