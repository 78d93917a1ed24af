"""The bad-input corpus: every parser and intake against every bad case it could meet.

Text cases are files under ``tests/corpus/<kind>/``; binary cases (FITS catalogs, DVO tables,
bundles, batches) are made here from a good file by a named mutation, so each is reproducible.
Every case must give the parser's own error (a subclass of IppError) naming the input, never
another exception, and must leave nothing behind (an intake writes nothing it keeps). Text
parsers are also fuzzed with hypothesis: any text either parses or gives that error.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import IppError, MdcError, SettingsError, StorageError
from shared.core.settings import load_settings, parse_dsn
from shared.distribution import bundles, datastore
from shared.formats import catalogs, dvo, mdc
from shared.psps import batches, builders, configs, odm
from shared.storage.keys import parse_key
from sim.psps.dxlayer import Rejected, check_batch

CORPUS = Path(__file__).resolve().parent / "corpus"


def cases(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).iterdir())


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# -- text cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", cases("mdc"), ids=ids(cases("mdc")))
def test_every_bad_mdc_file_is_refused_naming_it(path: Path):
    with pytest.raises(MdcError) as err:
        mdc.load(path)
    assert path.name in str(err.value)


LISTING_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "files": datastore.parse_files,
    "filesets": datastore.parse_filesets,
}


@pytest.mark.parametrize("path", cases("listings"), ids=ids(cases("listings")))
def test_every_bad_datastore_listing_is_refused_naming_it(path: Path):
    parse = LISTING_PARSERS[path.name.split("_", 1)[0]]
    with pytest.raises(datastore.DataStoreError) as err:
        parse(path.read_text(errors="replace"), f"http://ds/{path.name}")
    assert path.name in str(err.value)


@pytest.mark.parametrize("path", cases("odm"), ids=ids(cases("odm")))
def test_every_unusable_odm_answer_is_refused_naming_the_batch(path: Path):
    status = int(path.name.split("__", 1)[0])
    with pytest.raises(odm.OdmError) as err:
        odm.parse_status("B00000001", status, path.read_text())
    assert "B00000001" in str(err.value)


@pytest.mark.parametrize("path", cases("settings"), ids=ids(cases("settings")))
def test_every_bad_settings_file_is_refused_naming_the_setting_or_file(path: Path):
    with pytest.raises(SettingsError) as err:
        load_settings(environ={"IPP_SETTINGS": str(path)})
    text = str(err.value)
    key = path.read_text().split("=", 1)[0].strip()
    assert path.name in text or key in text, text


@pytest.mark.parametrize("path", cases("psps_config"), ids=ids(cases("psps_config")))
def test_every_bad_loading_config_value_is_refused_naming_the_field(path: Path):
    key, _, value = path.read_text().strip().partition("=")
    with pytest.raises(configs.ConfigError) as err:
        values = configs.defaults("corpus")
        values[key] = configs.parse_value(key, value)
        configs.check_whole("corpus", values)
    assert key in str(err.value)


# -- a good batch, and bad manifests beside it ----------------------------------------------


@pytest.fixture
def good_batch(tmp_path: Path) -> batches.Written:
    return batches.write(tmp_path / "batch", "B00000001", "IN", "corpus", builders.in_batch("corpus", 1))


def test_the_good_batch_passes_the_stand_ins_checks(good_batch):
    checked = check_batch(
        good_batch.fits_path.parent, "B00000001", good_batch.fits_path.name, good_batch.manifest_path.name
    )
    assert checked.kind == "IN" and set(checked.tables) == {"Filter", "Survey"}


@pytest.mark.parametrize("path", cases("manifests"), ids=ids(cases("manifests")))
def test_every_bad_manifest_fails_the_batch_at_load(good_batch, path: Path):
    shutil.copy(path, good_batch.manifest_path)
    with pytest.raises(Rejected) as err:
        check_batch(
            good_batch.fits_path.parent, "B00000001", good_batch.fits_path.name, good_batch.manifest_path.name
        )
    assert err.value.stage == "load"


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _drop_last_table(data: bytes) -> bytes:
    from astropy.io import fits

    with fits.open(io.BytesIO(data)) as hdus:
        out = io.BytesIO()
        fits.HDUList(list(hdus[:-1])).writeto(out)
        return out.getvalue()


FITS_MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncate,
    "header_only": lambda d: d[:2880],
    "not_fits": lambda d: b"GIF89a" + d[6:],
    "zeroed": lambda d: bytes(len(d)),
    "empty": lambda d: b"",
    "table_missing": _drop_last_table,
}


@pytest.mark.parametrize("mutation", FITS_MUTATIONS, ids=list(FITS_MUTATIONS))
def test_every_damaged_batch_file_fails_at_load(good_batch, mutation: str):
    data = FITS_MUTATIONS[mutation](good_batch.fits_path.read_bytes())
    good_batch.fits_path.write_bytes(data)
    manifest = json.loads(good_batch.manifest_path.read_text())
    manifest["bytes"], manifest["md5sum"] = bundles.file_digest(good_batch.fits_path)
    good_batch.manifest_path.write_text(json.dumps(manifest))  # the manifest agrees: the
    with pytest.raises(Rejected) as err:  # FITS checks must catch it
        check_batch(
            good_batch.fits_path.parent, "B00000001", good_batch.fits_path.name, good_batch.manifest_path.name
        )
    assert "B00000001.fits" in str(err.value) or "Filter" in str(err.value) or "Survey" in str(err.value)


# -- catalogs and DVO tables -----------------------------------------------------------------


def _cmf() -> bytes:
    return catalogs.cmf_bytes({"IMAGEID": 1}, catalogs.empty_table(5))


@pytest.mark.parametrize("mutation", FITS_MUTATIONS, ids=list(FITS_MUTATIONS))
def test_every_damaged_cmf_and_smf_is_refused_naming_it(tmp_path, mutation: str):
    path = tmp_path / f"case_{mutation}.cmf"
    path.write_bytes(FITS_MUTATIONS[mutation](_cmf()))
    for reader in (catalogs.read_cmf, catalogs.read_smf):
        with pytest.raises(catalogs.CatalogError) as err:
            reader(path)
        assert path.name in str(err.value)


def test_a_cmf_read_as_an_smf_is_refused(tmp_path):
    path = tmp_path / "really_a.cmf"
    path.write_bytes(_cmf())
    with pytest.raises(catalogs.CatalogError):
        catalogs.read_smf(path)


@pytest.mark.parametrize("mutation", FITS_MUTATIONS, ids=list(FITS_MUTATIONS))
def test_every_damaged_dvo_table_is_refused_naming_it(tmp_path, mutation: str):
    rows = dvo.empty(dvo.CPT_COLUMNS, 4)
    path = tmp_path / f"n2000_{mutation}.cpt"
    path.write_bytes(FITS_MUTATIONS[mutation](dvo.table_bytes(dvo.CPT_COLUMNS, rows)))
    with pytest.raises(dvo.DvoError) as err:
        dvo.read_table(path, dvo.CPT_COLUMNS)
    assert path.name in str(err.value)


def test_a_dvo_table_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "wrong.cps"
    path.write_bytes(dvo.table_bytes(dvo.CPT_COLUMNS, dvo.empty(dvo.CPT_COLUMNS, 2)))
    with pytest.raises(dvo.DvoError, match="columns"):
        dvo.read_table(path, dvo.CPS_COLUMNS)


# -- bundles ---------------------------------------------------------------------------------


def _tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        add(tar)
    return gzip.compress(raw.getvalue())


def _member(
    name: str, data: bytes = b"pixels", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        good = tarfile.TarInfo("./good.fits")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"good"))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add


BUNDLES: dict[str, Callable[[], bytes]] = {
    "absolute_path": lambda: _tar(_member("/etc/evil")),
    "parent_path": lambda: _tar(_member("../evil.fits")),
    "symlink": lambda: _tar(_member("./link.fits", kind=tarfile.SYMTYPE, link="/etc/passwd")),
    "hard_link": lambda: _tar(_member("./hard.fits", kind=tarfile.LNKTYPE, link="good.fits")),
    "device": lambda: _tar(_member("./dev", kind=tarfile.CHRTYPE)),
    "subdirectory": lambda: _tar(_member("./sub/file.fits")),
    "member_twice": lambda: _tar(_member("./good.fits")),
    "truncated": lambda: _tar(_member("./other.fits", b"x" * 100_000))[:-200],
    "not_gzip": lambda: b"this is not a bundle\n",
    "empty_archive": lambda: _tar(lambda tar: None),
}


@pytest.mark.parametrize("case", BUNDLES, ids=list(BUNDLES))
def test_every_bad_bundle_is_refused_and_leaves_nothing(tmp_path, case: str):
    bundle = tmp_path / f"{case}.tgz"
    bundle.write_bytes(BUNDLES[case]())
    into = tmp_path / "out"
    with pytest.raises(bundles.BundleError) as err:
        bundles.extract(bundle, into)
    assert bundle.name in str(err.value)
    assert not any(into.rglob("*")), "files were left behind"
    assert not (tmp_path / "evil.fits").exists()


# -- fuzzing the text parsers ----------------------------------------------------------------

TEXT = st.text(max_size=400)
LISTING_LINES = st.lists(st.text(alphabet="abcB0123456789|#. -_:Tnul\t", max_size=60), max_size=8).map(
    "\n".join
)


@given(st.one_of(TEXT, LISTING_LINES.map(lambda s: "# fileID|bytes|md5sum|type|\n" + s)))
def test_any_text_is_a_file_listing_or_a_datastore_error(text: str):
    try:
        files = datastore.parse_files(text, "fuzz")
    except datastore.DataStoreError:
        return
    assert all(f.bytes >= 0 and len(f.md5sum) == 32 and "/" not in f.name for f in files)


@given(st.one_of(TEXT, LISTING_LINES.map(lambda s: "# filesetID|time|type|\n" + s)))
def test_any_text_is_a_fileset_listing_or_a_datastore_error(text: str):
    try:
        names = datastore.parse_filesets(text, "fuzz")
    except datastore.DataStoreError:
        return
    assert len(names) == len(set(names))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(["batch", "status", "stage", "reason", "x"]), kids, max_size=5)
    ),
    max_leaves=12,
)


@given(st.integers(100, 599), st.one_of(TEXT, JSONISH.map(json.dumps)))
def test_any_odm_answer_is_a_status_none_or_an_odm_error(code: int, text: str):
    try:
        status = odm.parse_status("B00000001", code, text)
    except odm.OdmError:
        return
    assert status is None or status.status in odm.STATUSES
    if status is not None:
        assert set(status.stages().values()) <= {"pending", "succeeded", "failed"}


@given(TEXT)
def test_any_deletion_policy_text_parses_or_gives_a_value_error(text: str):
    try:
        policy = configs.parse_policy(text)
    except ValueError:
        return
    assert set(policy) <= set(configs.DELETION_STATES)


@given(st.sampled_from(configs.FIELD_NAMES), TEXT)
def test_any_config_value_parses_or_gives_a_config_error_naming_the_field(name: str, text: str):
    try:
        configs.parse_value(name, text)
    except configs.ConfigError as exc:
        assert name in str(exc)


@given(TEXT)
def test_any_dsn_parses_or_gives_a_settings_error(text: str):
    try:
        dsn = parse_dsn(text)
    except SettingsError:
        return
    assert dsn.database


@given(st.one_of(TEXT, TEXT.map(lambda s: "neb://" + s)))
def test_any_storage_key_parses_or_gives_a_storage_error(text: str):
    try:
        key = parse_key(text)
    except StorageError:
        return
    assert ".." not in key.path.split("/")


@given(st.binary(max_size=3000))
def test_any_bytes_are_a_cmf_or_a_catalog_error(data: bytes):
    with contextlib.suppress(catalogs.CatalogError):
        catalogs.read_cmf(data)


def test_every_corpus_error_is_an_ipp_error():
    """The error types above are the project's own, so agents record them as failures with
    the reason instead of crashing."""
    for kind in (
        MdcError,
        datastore.DataStoreError,
        odm.OdmError,
        SettingsError,
        configs.ConfigError,
        catalogs.CatalogError,
        dvo.DvoError,
        bundles.BundleError,
        Rejected,
        StorageError,
    ):
        assert issubclass(kind, IppError), kind
