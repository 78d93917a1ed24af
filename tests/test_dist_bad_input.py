"""The mirror's client against a DataStore that serves bad input: every case is refused with
the reason recorded, nothing is written outside staging and nothing is half-imported."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from shared import datastore, mdc
from shared.db import Database
from shared.mdc import Block, Scalar
from shared.queries import Query
from shared.schema import CODE_SCHEMA_VERSION
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import Mirror, free_port

_numbers = itertools.count()
BASE = "neb://any/src/20090415/o1.1/o1.1.ch.1"
FILESET = "o1.chip.1.1.1"


def dbinfo(version: int = CODE_SCHEMA_VERSION) -> bytes:
    doc = Block()
    v = Block()
    v.add("schema_version", Scalar("S32", version))
    doc.add("dbversion", v)
    run = Block()
    for name, kind, value in (("chip_id", "S64", 1), ("exp_id", "S64", 1), ("state", "STR", "full"),
                              ("workdir", "STR", "neb://any/src/20090415")):
        run.add(name, Scalar(kind, value))
    doc.multi.append("chipRun")
    doc.add("chipRun", run)
    comp = Block()
    for name, kind, value in (("chip_id", "S64", 1), ("exp_id", "S64", 1),
                              ("class_id", "STR", "XY33"), ("path_base", "STR", BASE),
                              ("data_state", "STR", "full")):
        comp.add(name, Scalar(kind, value))
    doc.multi.append("chipProcessedImfile")
    doc.add("chipProcessedImfile", comp)
    return mdc.dumps(doc).encode()


def tgz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes = b"pixels", kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def good_bundle() -> bytes:
    return tgz([member("./o1.1.ch.1.XY33.ch.fits", b"image"), member("./o1.1.ch.1.XY33.log")])


@dataclass
class FakeDataStore:
    """A DataStore stand-in whose answers each test bends."""

    filesets: list[str] = field(default_factory=lambda: [FILESET])
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    listing: Callable[[FakeDataStore], str] | None = None
    status: int = 200
    hang_s: float = 0.0
    lie_md5: bool = False
    lie_size: bool = False
    slow_file_s: float = 0.0
    ranges: list[str] = field(default_factory=list)

    def product_index(self) -> str:
        return datastore.format_listing(("filesetID", "time registered", "type"),
                                        [(n, "2009-04-15T03:02:12Z", "notset")
                                         for n in self.filesets])

    def fileset_index(self) -> str:
        return self.listing(self) if self.listing is not None else self.honest_index()

    def honest_index(self) -> str:
        rows = []
        for name, (data, kind) in self.files.items():
            md5 = hashlib.md5(data).hexdigest()
            if self.lie_md5:
                md5 = hashlib.md5(data + b"!").hexdigest()
            rows.append((name, len(data) + (7 if self.lie_size else 0), md5, kind))
        return datastore.format_listing(datastore.FILE_HEADER, rows)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.status != 200:
            return web.Response(status=self.status, text="boom")
        parts = request.path.strip("/").split("/")
        if parts[-1] == "index.txt" and len(parts) == 3:
            return web.Response(text=self.product_index())
        if parts[-1] == "index.txt":
            return web.Response(text=self.fileset_index())
        data, _ = self.files[parts[-1]]
        if self.slow_file_s and parts[-1].endswith(".tgz"):
            await asyncio.sleep(self.slow_file_s)
        wanted = request.headers.get("Range")
        if wanted:
            self.ranges.append(f"{parts[-1]} {wanted}")
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            return web.Response(status=206, body=data[start:])
        return web.Response(body=data)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDataStore, int]]:
    store = FakeDataStore(files={"dbinfo.chip.1.mdc": (dbinfo(), "dbinfo"),
                                 "o1.1.ch.1.XY33.tgz": (good_bundle(), "tgz")})
    app = web.Application()
    app.router.add_get("/{tail:.*}", store.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield store, port
    await runner.cleanup()


FILESET_ROW = Query("t_fs", "SELECT state, note FROM rcDSFileset WHERE name = %(name)s", "test")
CHIP_RUNS = Query("t_runs", "SELECT COUNT(*) FROM chipRun", "test")
OBJECTS = Query("t_obj", "SELECT COUNT(*) FROM storage_object", "test")


async def pull(mirror: Mirror, port: int, tmp_path: Path, **settings: object) -> AgentProcess:
    db = mirror.db
    if not await db.fetch_all(Query("t_src", "SELECT name FROM rcDestination", "test")):
        await db.execute(Query("t_add", "INSERT INTO rcDestination (name, status_uri, product) "
                               "VALUES ('src', %(uri)s, 'prod')", "test"),
                         uri=f"http://127.0.0.1:{port}/ds")
    proc = AgentProcess("dist_client", mirror.dsn, tmp_path, "--once",
                        var_dir=str(mirror.var_dir), **settings)
    code = await proc.wait(timeout_s=120)
    assert code == 0, proc.output()
    return proc


async def assert_refused(mirror: Mirror, problem: str, name: str = FILESET) -> None:
    row = await mirror.db.fetch_one(FILESET_ROW, name=name)
    assert row is not None and row["state"] == "failed", row
    assert problem in row["note"], row["note"]
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0
    assert await mirror.db.fetch_val(OBJECTS) == 0
    last = await mirror.db.fetch_val(Query("t_last", "SELECT last_fileset FROM rcDestination",
                                           "test"))
    assert last is None


async def test_the_good_fileset_imports(mirror, fake, tmp_path):
    _store, port = fake
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1
    assert await mirror.db.fetch_val(OBJECTS) == 2


def _escape(tmp_path: Path) -> str:
    return str(tmp_path / f"escaped-{uuid.uuid4().hex}")


@pytest.mark.parametrize(("members", "problem"), [
    (lambda t: [member(_escape(t))], "absolute path"),
    (lambda t: [member("./../../../escaped")], "absolute path or '..'"),
    (lambda t: [member("./o1.1.ch.1.XY33.link", kind=tarfile.SYMTYPE, link="/etc/passwd")],
     "is a link"),
    (lambda t: [member("./o1.1.ch.1.XY33.ch.fits"),
                member("./o1.1.ch.1.XY33.hard", kind=tarfile.LNKTYPE,
                       link="./o1.1.ch.1.XY33.ch.fits")], "is a link"),
    (lambda t: [member("./o1.1.ch.1.XY33.dev", kind=tarfile.CHRTYPE)], "device"),
    (lambda t: [member("./sub/o1.1.ch.1.XY33.ch.fits")], "not './<file name>'"),
    (lambda t: [member("./other.file")], "not a file of its component"),
])
async def test_unsafe_bundle_members_are_refused(mirror, fake, tmp_path, members, problem):
    store, port = fake
    listed = members(tmp_path)
    store.files["o1.1.ch.1.XY33.tgz"] = (tgz(listed), "tgz")
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, problem)
    assert not list(tmp_path.glob("escaped*")) and not (tmp_path.parent / "escaped").exists()


async def test_truncated_bundle_is_refused(mirror, fake, tmp_path):
    store, port = fake
    store.files["o1.1.ch.1.XY33.tgz"] = (good_bundle()[:-30], "tgz")
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "not a complete gzip'd tar")


@pytest.mark.parametrize(("lie", "problem"), [("lie_md5", "with md5"), ("lie_size", "bytes")])
async def test_md5_or_size_mismatch_is_refused(mirror, fake, tmp_path, lie, problem):
    store, port = fake
    setattr(store, lie, True)
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, problem)


@pytest.mark.parametrize(("listing", "problem"), [
    (lambda s: "# fileID|bytes|md5sum|type|\ngarbage line without bars\n", "must end with '|'"),
    (lambda s: s.honest_index().replace("|tgz", "|exe"), "unknown file type"),
])
async def test_malformed_listing_is_refused(mirror, fake, tmp_path, listing, problem):
    store, port = fake
    store.listing = listing
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, problem)


async def test_fileset_name_not_following_the_rules_is_refused(mirror, fake, tmp_path):
    store, port = fake
    store.filesets = ["not-a-fileset"]
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "does not follow", name="not-a-fileset")


async def test_dbinfo_of_another_schema_version_is_refused(mirror, fake, tmp_path):
    store, port = fake
    store.files["dbinfo.chip.1.mdc"] = (dbinfo(version=CODE_SCHEMA_VERSION + 7), "dbinfo")
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "schema version")


async def test_fileset_listed_twice_is_refused(mirror, fake, tmp_path):
    store, port = fake
    store.filesets = [FILESET, FILESET]
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_poll_failed")[0]["reason"].endswith("listed twice")
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0


async def test_http_500_is_recorded_and_nothing_imported(mirror, fake, tmp_path):
    store, port = fake
    store.status = 500
    proc = await pull(mirror, port, tmp_path)
    assert "HTTP 500" in proc.events("dist_poll_failed")[0]["reason"]
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0


async def test_a_hung_server_times_out(mirror, fake, tmp_path):
    store, port = fake
    store.hang_s = 30
    proc = await pull(mirror, port, tmp_path, dist_http_timeout_s=1)
    assert "Timeout" in proc.events("dist_poll_failed")[0]["reason"]
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0


async def test_a_failed_fileset_is_retried_and_imports_once_fixed(mirror, fake, tmp_path):
    store, port = fake
    store.lie_md5 = True
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "with md5")
    store.lie_md5 = False
    await pull(mirror, port, tmp_path)
    row = await mirror.db.fetch_one(FILESET_ROW, name=FILESET)
    assert row["state"] == "full", row
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1


async def test_a_partial_download_is_resumed_with_range(mirror, fake, tmp_path):
    store, port = fake
    bundle, _ = store.files["o1.1.ch.1.XY33.tgz"]
    staging = mirror.var_dir / "dist" / "client" / "src" / FILESET
    staging.mkdir(parents=True)
    (staging / "o1.1.ch.1.XY33.tgz.part").write_bytes(bundle[:40])
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert store.ranges == ["o1.1.ch.1.XY33.tgz bytes=40-"]


async def test_a_client_killed_mid_fileset_leaves_nothing_and_the_next_imports_it(
        mirror, fake, tmp_path):
    store, port = fake
    store.slow_file_s = 8
    await mirror.db.execute(Query("t_add", "INSERT INTO rcDestination (name, status_uri, product) "
                                  "VALUES ('src', %(uri)s, 'prod')", "test"),
                            uri=f"http://127.0.0.1:{port}/ds")
    victim = AgentProcess("dist_client", mirror.dsn, tmp_path, var_dir=str(mirror.var_dir))
    dbinfo_file = mirror.var_dir / "dist" / "client" / "src" / FILESET / "dbinfo.chip.1.mdc"
    try:  # the dbinfo is in; the bundle download hangs: kill it there
        await eventually(dbinfo_file.exists, timeout_s=30, what="the dbinfo downloaded")
    finally:
        victim.kill()
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0
    assert await mirror.db.fetch_val(OBJECTS) == 0
    store.slow_file_s = 0
    await eventually(lambda: _stale(mirror.db), timeout_s=20, what="the victim's heartbeat stale")
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1 and await mirror.db.fetch_val(OBJECTS) == 2


async def _stale(db: Database) -> bool:
    """The killed client's heartbeat is older than client_stale_s (2 s in tests), so the next
    agent's start-up sweep releases its claim."""
    return bool(await db.fetch_val(Query(
        "t_stale", "SELECT COUNT(*) FROM rcDestination d JOIN clients c ON c.client_id = "
        "d.owner WHERE c.heartbeat_at < NOW(6) - INTERVAL 2500000 MICROSECOND", "test")))
