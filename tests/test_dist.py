"""Distribution: the DataStore listings, the server building filesets, and a mirror's client
importing them over real HTTP on 127.0.0.1."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.db.database import Database
from shared.db.queries import Query
from shared.distribution import datastore
from shared.processing import runs
from shared.storage.store import Storage
from tests import ipp_receiver
from tests.helpers import ROOT, AgentProcess, agent_env, eventually
from tests.mirror_fixture import free_port, unconfined
from tests.survey_fixture import SurveySite, survey_site

_numbers = itertools.count()


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for survey in survey_site(
        test_dsn, f"ds{next(_numbers)}", tmp_path / "ipp", exposures=3, chips=2, seed=7
    ):
        yield survey


def ippctl(dsn: str, var_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**agent_env(dsn), "IPP_VAR_DIR": str(var_dir)}
    return subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def once(name: str, dsn: str, var_dir: Path, tmp_path: Path, **settings: Any) -> AgentProcess:
    proc = AgentProcess(name, dsn, tmp_path, "--once", var_dir=str(var_dir), **settings)
    code = await proc.wait(timeout_s=120)
    assert code == 0, proc.output()
    return proc


STATE = Query(
    "t_state",
    "SELECT state, fileset_name, note FROM distRun WHERE stage = %(stage)s AND stage_id = %(id)s",
    "test",
)


# -- listings ------------------------------------------------------------------------------


def test_listing_layout_is_the_reference_one_byte_for_byte():
    """Fields padded to the widest of label and values, each ended by '|', '#' header."""
    text = datastore.format_listing(
        ("filesetID", "time registered", "type", "target_id", "stage", "stage_id", "exp_name"),
        [("o4741g0234o.chip.14517.31.1", "2009-04-15T03:02:12Z", "notset", 1, "chip", 14517, "o4741g0234o")],
    )
    assert text == (
        "# filesetID                |time registered     |type  |target_id|stage|stage_id|exp_name   |\n"
        "o4741g0234o.chip.14517.31.1|2009-04-15T03:02:12Z|notset|1        |chip |14517   |o4741g0234o|\n"
    )
    parsed = datastore.parse_listing(text, "filesetID", "t")
    assert parsed.rows[0][0] == "o4741g0234o.chip.14517.31.1" and parsed.rows[0][3] == "1"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fileID|bytes|md5sum|type|\n", "no '#' header"),
        ("# fileID|bytes|md5sum|type|\na.tgz|12|" + "0" * 32 + "|tgz\n", "must end with '|'"),
        ("# fileID|bytes|md5sum|type|\na.tgz|12|" + "0" * 32 + "|\n", "fields, the header has"),
        ("# fileID|bytes|md5sum|type|\na.tgz|x|" + "0" * 32 + "|tgz|\n", "is not a number"),
        ("# fileID|bytes|md5sum|type|\na.tgz|1|" + "G" * 32 + "|tgz|\n", "32 lowercase hex"),
        ("# fileID|bytes|md5sum|type|\na.tgz|1|" + "0" * 32 + "|exe|\n", "unknown file type"),
        ("# fileID|bytes|md5sum|type|\n../a|1|" + "0" * 32 + "|tgz|\n", "not a valid file id"),
        (
            "# fileID|bytes|md5sum|type|\na|1|" + "0" * 32 + "|tgz|\na|1|" + "0" * 32 + "|tgz|\n",
            "listed twice",
        ),
    ],
)
def test_a_malformed_file_listing_is_refused_naming_the_problem(text, problem):
    with pytest.raises(datastore.DataStoreError, match=problem):
        datastore.parse_files(text, "http://x/ds/p/f/index.txt")


# -- server and client ---------------------------------------------------------------------


def add_product(site: SurveySite, name: str, columns: str | None = None) -> None:
    """``ippctl ds product add NAME --type ipp-dist`` (with its fileset columns), as an
    operator makes a distribution product."""
    out = ippctl(
        site.dsn, site.var_dir, "ds", "product", "add", name, "--type", "ipp-dist",
        "--description", "distribution", *(("--columns", columns) if columns else ()),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


async def test_a_queued_chip_run_appears_at_the_mirror_full_with_identical_files(site, sdb, mirror, tmp_path):
    port = free_port()
    add_product(site, "ipp-dist", "target_id,stage,stage_id,exp_name")
    out = ippctl(
        site.dsn, site.var_dir, "dist", "queue", "--stage", "chip", "--id", "1", "--product", "ipp-dist"
    )
    assert out.returncode == 0 and "queued" in out.stdout, out.stderr
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        row = await eventually(lambda: _shipped(sdb), timeout_s=60, what="the fileset")
        name = row["fileset_name"]
        assert name.endswith(".chip.1.1.1")
        listing = ippctl(site.dsn, site.var_dir, "ds", "ls", "ipp-dist", name)
        assert "dbinfo.chip.1.mdc" in listing.stdout and ".XY33.tgz" in listing.stdout
        # GNU tar reads the bundles; members are ./basename
        key = next(f["uri"] for f in await _files(sdb) if f["file_name"].endswith(".tgz"))
        bundle = await Storage(sdb).locate(key)
        members = subprocess.run(
            ["tar", "-tzf", str(bundle)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert members and all(m.startswith("./") and "/" not in m[2:] for m in members)

        out = ippctl(
            mirror.dsn,
            mirror.var_dir,
            "dist",
            "source",
            "add",
            "ipp",
            "--uri",
            f"http://127.0.0.1:{port}/ds",
            "--product",
            "ipp-dist",
        )
        assert out.returncode == 0, out.stderr
        client = await once("dist_client", mirror.dsn, mirror.var_dir, tmp_path)
        assert client.events("dist_imported")
    finally:
        server.kill()
    here = {f.key: f for f in await runs.run_files(sdb, "chip", 1, md5=True) if f.exists}
    there = {unconfined(f.key): f for f in await runs.run_files(mirror.db, "chip", 1, md5=True)}
    assert (await runs.get_run(mirror.db, "chip", 1))["state"] == "full"
    assert here and all(there[k].exists and there[k].md5sum == f.md5sum for k, f in here.items())
    sources = ippctl(mirror.dsn, mirror.var_dir, "dist", "source", "ls")
    assert name in sources.stdout
    # a second pass finds nothing new and changes nothing
    again = await once("dist_client", mirror.dsn, mirror.var_dir, tmp_path)
    assert not again.events("dist_imported") and not again.events("dist_import_failed")


async def _shipped(sdb: Database) -> dict[str, object] | None:
    row = await sdb.fetch_one(STATE, stage="chip", id=1)
    return row if row and row["state"] == "full" else None


async def _files(sdb: Database) -> list[dict[str, Any]]:
    return await sdb.fetch_all(Query("t_f", "SELECT file_name, uri FROM dsFile", "test"))


def test_bundle_member_tar_is_readable(tmp_path):
    """A bundle built here is a plain gzip'd tar (python's tarfile reads it too)."""
    from shared.distribution import bundles

    src = tmp_path / "a.fits"
    src.write_bytes(b"x" * 5000)
    built = bundles.build(tmp_path / "a.tgz", [bundles.Member(src, "a.fits")])
    with tarfile.open(built.path) as tar:
        assert tar.getnames() == ["./a.fits"]


async def test_datastore_http_listings_newer_only_404s_and_range(site, sdb, tmp_path):
    """The service of REFERENCE 6 over real HTTP: product listing after a fileset, 404 for
    an unknown fileset, unregistered names and paths out of the tree; Range downloads."""
    import aiohttp

    port = free_port()
    add_product(site, "p", "stage,stage_id")
    for run_id in (1, 2):
        assert (
            ippctl(
                site.dsn,
                site.var_dir,
                "dist",
                "queue",
                "--stage",
                "camera",
                "--id",
                str(run_id),
                "--product",
                "p",
                "--no-magic",  # camera 2 was never destreaked: shipped as asked, unmagicked
            ).returncode
            == 0
        )
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    base = f"http://127.0.0.1:{port}/ds"
    try:

        async def both_shipped() -> bool:
            rows = await sdb.fetch_all(Query("t_s", "SELECT state FROM distRun", "test"))
            return [r["state"] for r in rows] == ["full", "full"]

        await eventually(both_shipped, timeout_s=60, what="two filesets")
        async with aiohttp.ClientSession() as http:
            root = await (await http.get(f"{base}/index.txt")).text()
            assert root.startswith("# productID") and "\np " in f"\n{root}"
            listing = await (await http.get(f"{base}/p/index.txt")).text()
            names = [line.split("|")[0].strip() for line in listing.splitlines()[1:]]
            assert [n.split(".", 1)[1] for n in names] == ["camera.1.1.1", "camera.2.2.1"]
            assert [c.strip() for c in listing.splitlines()[0].split("|")[3:5]] == ["stage", "stage_id"]
            newer = await (await http.get(f"{base}/p/index.txt?{names[0]}")).text()
            assert [line.split("|")[0].strip() for line in newer.splitlines()[1:]] == [names[1]]
            assert (await http.get(f"{base}/p/index.txt?no.such.fileset")).status == 404
            files = datastore.parse_files(
                await (await http.get(f"{base}/p/{names[0]}/index.txt")).text(), "t"
            )
            tgz = next(f for f in files if f.type == "tgz")
            whole = await (await http.get(f"{base}/p/{names[0]}/{tgz.name}")).read()
            assert len(whole) == tgz.bytes
            part = await http.get(f"{base}/p/{names[0]}/{tgz.name}", headers={"Range": "bytes=10-"})
            assert part.status == 206 and await part.read() == whole[10:]
            assert (await http.get(f"{base}/p/{names[0]}/not-registered.tgz")).status == 404
            assert (await http.get(f"{base}/p/{names[0]}/..%2F..%2Fetc%2Fpasswd")).status == 404
            assert (await http.get(f"{base}/nosuch/index.txt")).status == 404
            # names are case-sensitive, as a web server's paths are (red-team finding: the
            # database's collation let P/ and a fileset's name in capitals through)
            assert (await http.get(f"{base}/P/index.txt")).status == 404
            assert (await http.get(f"{base}/p/{names[0].upper()}/index.txt")).status == 404
            assert (await http.get(f"{base}/p/{names[0].upper()}/{tgz.name}")).status == 404
            assert (await http.get(f"{base}/p/{names[0]}/{tgz.name.upper()}")).status == 404
            assert (await http.get(f"{base}/p/index.txt?{names[0].upper()}")).status == 404
    finally:
        server.kill()


async def test_standing_target_and_clean_distribution(site, sdb, mirror, tmp_path):
    """A standing target queues every full run of its dist_group; a --clean distribution
    ships the rows as cleaned and only what cleanup keeps."""
    add_product(site, "c")
    out = ippctl(
        site.dsn,
        site.var_dir,
        "dist",
        "target",
        "add",
        "--dist-group",
        "survey",
        "--stage",
        "warp",
        "--product",
        "c",
        "--clean",
    )
    assert out.returncode == 0, out.stderr
    await once("dist_server", site.dsn, site.var_dir, tmp_path, ds_port=free_port())
    rows = await sdb.fetch_all(
        Query("t_d", "SELECT stage, stage_id, clean, state FROM distRun ORDER BY stage_id", "test")
    )
    # Seed 001 and the IPP's ippTools/share/disttool_pending_warp.sql ("(warpRun.magicked > 0)
    # OR distRun.no_magic"): "If this value is non-zero, the image has been destreaked and thus can be sent
    # through the distribution system". Warp 1 (exposure 0) was destreaked; warps 2 and 3 were
    # not (magicked 0): queued by the target, they wait, and ippctl dist ls says so.
    assert [(r["stage"], r["stage_id"], r["clean"], r["state"]) for r in rows] == [
        ("warp", 1, 1, "full"),
        ("warp", 2, 1, "new"),
        ("warp", 3, 1, "new"),
    ]
    listed = ippctl(site.dsn, site.var_dir, "dist", "ls")
    assert listed.stdout.count("new (waits for destreak)") == 2, listed.stdout
    assert "2 warp run(s) for c wait for their destreak" in listed.stdout
    port = free_port()
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        assert (
            ippctl(
                mirror.dsn,
                mirror.var_dir,
                "dist",
                "source",
                "add",
                "ipp",
                "--uri",
                f"http://127.0.0.1:{port}/ds",
                "--product",
                "c",
            ).returncode
            == 0
        )
        await eventually(lambda: _listening(server), timeout_s=30, what="the DataStore up")
        await once("dist_client", mirror.dsn, mirror.var_dir, tmp_path)
    finally:
        server.kill()
    run = await runs.get_run(mirror.db, "warp", 1)
    assert run["state"] == "cleaned"
    there = {f.rule: f.exists for f in await runs.run_files(mirror.db, "warp", 1)}
    assert there["PSWARP.OUTPUT"] is False and there["PSWARP.CONFIG"] is True


def _listening(server: AgentProcess) -> bool:
    return bool(server.events("ds_listening"))


async def test_ds_remove_hides_then_deletes_a_fileset_and_its_files(site, sdb, tmp_path):
    add_product(site, "r")
    assert (
        ippctl(
            site.dsn,
            site.var_dir,
            "dist",
            "queue",
            "--stage",
            "chip",
            "--id",
            "2",
            "--product",
            "r",
            "--no-magic",
        ).returncode
        == 0
    )
    await once("dist_server", site.dsn, site.var_dir, tmp_path, ds_port=free_port())
    name = (await sdb.fetch_one(STATE, stage="chip", id=2))["fileset_name"]
    uris = [f["uri"] for f in await _files(sdb)]
    assert await _most_recent(sdb, "r") == name
    hidden = ippctl(site.dsn, site.var_dir, "ds", "remove", "r", name)
    assert hidden.returncode == 0 and "hidden" in hidden.stdout
    assert name not in await datastore.product_listing(sdb, "r")
    # issue 29: the root listing's "most recent" no longer names the hidden fileset
    assert await _most_recent(sdb, "r") == "none"
    assert all([await Storage(sdb).exists(u) for u in uris])
    gone = ippctl(site.dsn, site.var_dir, "ds", "remove", "r", name, "--rm")
    assert gone.returncode == 0 and f"{len(uris)} files deleted" in gone.stdout
    assert not any([await Storage(sdb).exists(u) for u in uris])
    assert await _files(sdb) == []
    missing = ippctl(site.dsn, site.var_dir, "ds", "remove", "r", name)
    assert missing.returncode == 1 and "has no fileset" in missing.stderr


async def _most_recent(db: Database, product: str) -> str:
    """The fileset the DataStore's root listing names as the product's most recent."""
    for line in (await datastore.root_listing(db)).splitlines()[1:]:
        fields = [f.strip() for f in line.split("|")]
        if fields[0] == product:
            return fields[1]
    raise AssertionError(f"no product {product} in the root listing")


async def test_a_cleaned_run_ships_its_gzipped_logs(site, sdb, mirror, tmp_path):
    """Cleanup replaces a chip's logs by <log>.gz; the run's files list them under that name,
    so its bundles carry them and the mirror has them, byte for byte."""
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    await once("cleanup", site.dsn, site.var_dir, tmp_path)
    logs = [f for f in await runs.run_files(sdb, "chip", 1) if f.file_class == "log" and f.exists]
    assert logs and all(f.compressed and f.key.endswith(".log.gz") for f in logs)
    add_product(site, "ipp-dist")
    out = ippctl(
        site.dsn,
        site.var_dir,
        "dist",
        "queue",
        "--stage",
        "chip",
        "--id",
        "1",
        "--product",
        "ipp-dist",
        "--clean",
    )
    assert out.returncode == 0, out.stderr
    port = free_port()
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        await eventually(lambda: _shipped(sdb), timeout_s=60, what="the fileset")
        members = set()
        for f in await _files(sdb):
            if str(f["file_name"]).endswith(".tgz"):
                bundle = await Storage(sdb).locate(str(f["uri"]))
                with tarfile.open(bundle) as tar:
                    members |= {m.name for m in tar.getmembers()}
        assert {"./" + f.key.rsplit("/", 1)[-1] for f in logs} <= members
        assert (
            ippctl(
                mirror.dsn,
                mirror.var_dir,
                "dist",
                "source",
                "add",
                "ipp",
                "--uri",
                f"http://127.0.0.1:{port}/ds",
                "--product",
                "ipp-dist",
            ).returncode
            == 0
        )
        await once("dist_client", mirror.dsn, mirror.var_dir, tmp_path)
    finally:
        server.kill()
    there = {unconfined(f.key): f for f in await runs.run_files(mirror.db, "chip", 1) if f.exists}
    assert all(there[f.key].compressed and there[f.key].md5sum == f.md5sum for f in logs)


#: Seed 002: "$stage is raw, chip, camera, fake, warp, or diff", and stacks
#: (``stack.$stack_id.$dist_id.$prod_id``): every one ships and imports.
SEED_002_STAGES = ("raw", "chip", "camera", "fake", "warp", "diff", "stack")
FIRST_RUN = {
    "raw": "SELECT MIN(exp_id) FROM rawExp",
    "chip": "SELECT MIN(chip_id) FROM chipRun",
    "camera": "SELECT MIN(cam_id) FROM camRun",
    "fake": "SELECT MIN(fake_id) FROM fakeRun",
    "warp": "SELECT MIN(warp_id) FROM warpRun",
    "diff": "SELECT MIN(diff_id) FROM diffRun",
    "stack": "SELECT MIN(stack_id) FROM stackRun",
}
DS_COMPONENTS = Query(
    "t_ds_components",
    "SELECT f.file_name, f.type, f.type_col_0 AS component FROM dsFile f "
    "JOIN dsFileset s ON s.fileset_id = f.fileset_id WHERE s.fileset_name = %(name)s",
    "test",
)


async def test_a_run_of_every_distribution_stage_ships_and_imports_with_identical_files(
    site, sdb, mirror, tmp_path
):
    """Seed 002's stages end to end: the server's fileset of each, the mirror's import, the
    run there in the same state with every file's md5. Raw images travel as
    ``basename(uri without .fits).$class_id.tgz`` (disttool_pending_raw.sql's path_base);
    a run's own files under the component ``exposure`` (disttool_pending_camera.sql)."""
    add_product(site, "ipp-dist", "target_id,stage,stage_id,exp_name")
    ids = {}
    for stage_name in SEED_002_STAGES:
        ids[stage_name] = int(await sdb.fetch_val(Query("t_first", FIRST_RUN[stage_name], "test")))
        # raw images are never destreaked here (seed 001: "we have not been de-streaking the
        # raw images"): shipped only when asked for unmagicked; the other stages are destreaked
        unmagicked = ("--no-magic",) if stage_name == "raw" else ()
        out = ippctl(
            site.dsn, site.var_dir, "dist", "queue", "--stage", stage_name, "--id", str(ids[stage_name]),
            "--product", "ipp-dist", *unmagicked,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
    port = free_port()
    server = AgentProcess("dist_server", site.dsn, tmp_path, var_dir=str(site.var_dir), ds_port=port)
    try:
        shipped = await eventually(lambda: _all_shipped(sdb), timeout_s=180, what="every stage's fileset")
        added = ippctl(
            mirror.dsn, mirror.var_dir, "dist", "source", "add", "ipp", "--uri",
            f"http://127.0.0.1:{port}/ds", "--product", "ipp-dist",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        client = await once("dist_client", mirror.dsn, mirror.var_dir, tmp_path)
        assert not client.events("dist_import_failed"), client.output()
        # the IPP's own receiver would place every file of every fileset
        base = f"http://127.0.0.1:{port}/ds/ipp-dist"
        for r in shipped:
            stage_name, run_id = r["stage"], ids[r["stage"]]
            files = [
                (f.name, f.type, f.component)
                for f in datastore.parse_files(await _get(f"{base}/{r['fileset_name']}/index.txt"), "t")
            ]
            dirinfo = await _get(f"{base}/{r['fileset_name']}/dirinfo.{stage_name}.{run_id}.mdc")
            dbinfo = await _get(f"{base}/{r['fileset_name']}/dbinfo.{stage_name}.{run_id}.mdc")
            assert ipp_receiver.unplaced(files, dirinfo, dbinfo) == [], stage_name
    finally:
        server.kill()
    assert {r["stage"] for r in shipped} == set(SEED_002_STAGES)
    raw_files = await sdb.fetch_all(
        DS_COMPONENTS, name=next(r["fileset_name"] for r in shipped if r["stage"] == "raw")
    )
    raw_uris = {c.component: c.uri for c in await runs.components(sdb, "raw", ids["raw"])}
    bundles = {r["file_name"]: r["component"] for r in raw_files if r["type"] == "tgz"}
    assert bundles == {
        f"{str(uri).rsplit('/', 1)[-1].removesuffix('.fits')}.{cls}.tgz": cls for cls, uri in raw_uris.items()
    }
    camera_files = await sdb.fetch_all(
        DS_COMPONENTS, name=next(r["fileset_name"] for r in shipped if r["stage"] == "camera")
    )
    assert {r["component"] for r in camera_files if r["type"] == "tgz"} == {"exposure"}
    for stage_name in SEED_002_STAGES:
        here = {
            f.key: f for f in await runs.run_files(sdb, stage_name, ids[stage_name], md5=True) if f.exists
        }
        there = {
            unconfined(f.key): f
            for f in await runs.run_files(mirror.db, stage_name, ids[stage_name], md5=True)
        }
        mirrored = await runs.get_run(mirror.db, stage_name, ids[stage_name])
        assert mirrored["state"] == (await runs.get_run(sdb, stage_name, ids[stage_name]))["state"], (
            stage_name
        )
        missing = [
            k for k, f in here.items() if not (k in there and there[k].exists and there[k].md5sum == f.md5sum)
        ]
        assert missing == [], f"{stage_name}: {missing[:3]}"
    await _clean_and_update_at_the_mirror(mirror, tmp_path, "chip", ids["chip"])


async def _clean_and_update_at_the_mirror(mirror: Any, tmp_path: Path, stage_name: str, run_id: int) -> None:
    """The mirror's update path: a run it imported, cleaned there, comes back from what was
    shipped (its config dump, its inputs' products) with every file as it was."""
    before = {
        f.key: f.md5sum for f in await runs.run_files(mirror.db, stage_name, run_id, md5=True) if f.exists
    }
    magicked = int((await runs.get_run(mirror.db, stage_name, run_id))["magicked"])
    assert magicked > 0  # shipped destreaked: its streak run's magic_id
    await runs.set_state(mirror.db, stage_name, "goto_cleaned", run_id=run_id)
    scratch = {"update_scratch_dir": str(tmp_path / "scratch"), "update_wait_s": 0}
    await once("cleanup", mirror.dsn, mirror.var_dir, tmp_path)
    assert (await runs.get_run(mirror.db, stage_name, run_id))["state"] == "cleaned"
    cleaned = {f.key for f in await runs.run_files(mirror.db, stage_name, run_id) if f.exists}
    # logs are gzipped; "chip update ... never re-creates the cmf" (REFERENCE 3)
    gone = {k for k in set(before) - cleaned if not k.endswith((".log", ".cmf"))}
    assert gone, "cleanup at the mirror deleted nothing"
    asked = ippctl(
        mirror.dsn, mirror.var_dir, "runs", "request-update", "--stage", stage_name, "--id", str(run_id)
    )
    assert asked.returncode == 0, asked.stderr
    for _ in range(4):
        await once("update", mirror.dsn, mirror.var_dir, tmp_path, **scratch)
        if (await runs.get_run(mirror.db, stage_name, run_id))["state"] == "full":
            break
    run = await runs.get_run(mirror.db, stage_name, run_id)
    waits = await mirror.db.fetch_all(Query("t_waits", "SELECT reason FROM update_wait", "test"))
    assert run["state"] == "full", [r["reason"] for r in waits]
    assert run["magicked"] == magicked  # given back after cleanup set it to -1
    after = {
        f.key: f.md5sum for f in await runs.run_files(mirror.db, stage_name, run_id, md5=True) if f.exists
    }
    assert {k: after.get(k) for k in gone} == {k: before[k] for k in gone}


ALL_SHIPPED = Query("t_all_shipped", "SELECT stage, state, fileset_name, note FROM distRun", "test")


async def _all_shipped(sdb: Database) -> list[dict[str, Any]] | None:
    rows = await sdb.fetch_all(ALL_SHIPPED)
    failed = [r for r in rows if r["state"] not in ("new", "full")]
    assert not failed, failed
    return rows if rows and all(r["state"] == "full" for r in rows) else None


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, f"{url}: {response.status}"
        return await response.text()
