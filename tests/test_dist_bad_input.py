"""The mirror's client against a DataStore that serves bad input, broken or hostile: every
case is refused with the reason recorded on its fileset, nothing is written outside staging,
nothing is half-imported, no resource grows without bound, and the other filesets and
sources go on."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import itertools
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import CODE_SCHEMA_VERSION
from shared.distribution import datastore
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar
from tests.helpers import ROOT, AgentProcess, agent_env, eventually
from tests.mirror_fixture import Mirror, free_port

_numbers = itertools.count()
BASE = "neb://any/src/20090415/o1.1/o1.1.ch.1"
FILESET = "o1.chip.1.1.1"


def dbinfo(
    version: int = CODE_SCHEMA_VERSION,
    *,
    chip_id: int = 1,
    state: str = "full",
    base: str = BASE,
    label: str | None = None,
    data_state: str = "full",
) -> bytes:
    doc = Block()
    v = Block()
    v.add("schema_version", Scalar("S32", version))
    doc.add("dbversion", v)
    run = Block()
    for name, kind, value in (
        ("chip_id", "S64", chip_id),
        ("exp_id", "S64", 1),
        ("state", "STR", state),
        ("workdir", "STR", "neb://any/src/20090415"),
    ):
        run.add(name, Scalar(kind, value))
    if label is not None:
        run.add("label", Scalar("STR", label))
    doc.multi.append("chipRun")
    doc.add("chipRun", run)
    comp = Block()
    for name, kind, value in (
        ("chip_id", "S64", chip_id),
        ("exp_id", "S64", 1),
        ("class_id", "STR", "XY33"),
        ("path_base", "STR", base),
        ("data_state", "STR", data_state),
    ):
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


def member(
    name: str, data: bytes = b"pixels", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
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
    #: the body of a status other than 200
    error_text: str = "boom"
    hang_s: float = 0.0
    lie_md5: bool = False
    lie_size: bool = False
    slow_file_s: float = 0.0
    ranges: list[str] = field(default_factory=list)
    #: files of other filesets than the first (fileset name -> file name -> (data, type))
    others: dict[str, dict[str, tuple[bytes, str]]] = field(default_factory=dict)
    #: bytes sent after a bundle's listed ones (a server that does not stop)
    extra_bytes: int = 0
    #: a Content-Encoding header sent with the listings (their body then gzipped)
    encoding: str | None = None
    #: seconds between the bytes of a listing (a server that drips)
    drip_s: float = 0.0
    #: answer every listing with a redirect to this URL
    redirect: str | None = None
    #: a bearer token every request must carry
    token: str | None = None
    #: (path and query, Authorization header or None) of every request received
    seen_auth: list[tuple[str, str | None]] = field(default_factory=list)
    #: bundles are answered only once this is set
    hold_bundles: asyncio.Event | None = None

    def files_of(self, fileset: str) -> dict[str, tuple[bytes, str]]:
        return self.others.get(fileset, self.files)

    def product_index(self) -> str:
        return datastore.format_listing(
            ("filesetID", "time registered", "type"),
            [(n, "2009-04-15T03:02:12Z", "notset") for n in self.filesets],
        )

    def fileset_index(self) -> str:
        return self.listing(self) if self.listing is not None else self.honest_index()

    def honest_index(self, fileset: str = FILESET) -> str:
        rows = []
        for name, (data, kind) in self.files_of(fileset).items():
            md5 = hashlib.md5(data).hexdigest()
            if self.lie_md5:
                md5 = hashlib.md5(data + b"!").hexdigest()
            rows.append((name, len(data) + (7 if self.lie_size else 0), md5, kind))
        return datastore.format_listing(datastore.FILE_HEADER, rows)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen_auth.append((request.path_qs, request.headers.get("Authorization")))
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.status != 200:
            return web.Response(status=self.status, text=self.error_text)
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="token required")
        parts = request.path.strip("/").split("/")
        if parts[-1] == "index.txt":
            if self.redirect is not None and "moved" not in request.query:
                raise web.HTTPFound(self.redirect)
            text = (
                self.product_index()
                if len(parts) == 3
                else (self.honest_index(parts[-2]) if parts[-2] in self.others else self.fileset_index())
            )
            return await self._listing(request, text)
        data, _ = self.files_of(parts[-2])[parts[-1]]
        if self.hold_bundles is not None and parts[-1].endswith(".tgz"):
            await self.hold_bundles.wait()
        if self.slow_file_s and parts[-1].endswith(".tgz"):
            await asyncio.sleep(self.slow_file_s)
        if self.extra_bytes and parts[-1].endswith(".tgz"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(data)
            for _ in range(self.extra_bytes // 65536):
                await resp.write(bytes(65536))
            return resp
        wanted = request.headers.get("Range")
        if wanted:
            self.ranges.append(f"{parts[-1]} {wanted}")
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            return web.Response(status=206, body=data[start:])
        return web.Response(body=data)

    async def _listing(self, request: web.Request, text: str) -> web.StreamResponse:
        body = text.encode()
        if self.encoding:
            return web.Response(body=gzip.compress(body), headers={"Content-Encoding": self.encoding})
        if not self.drip_s:
            return web.Response(body=body)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(len(body)):
            await resp.write(body[i : i + 1])
            await asyncio.sleep(self.drip_s)
        return resp


def fake_store() -> FakeDataStore:
    return FakeDataStore(
        files={"dbinfo.chip.1.mdc": (dbinfo(), "dbinfo"), "o1.1.ch.1.XY33.tgz": (good_bundle(), "tgz")}
    )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDataStore, int]]:
    async with serving_fake(fake_store()) as port_of:
        yield port_of


@asynccontextmanager
async def serving_fake(store: FakeDataStore) -> AsyncIterator[tuple[FakeDataStore, int]]:
    """``store`` answering on a free port of 127.0.0.1 for the block's life."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", store.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # hung handlers are dropped
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield store, port
    await runner.cleanup()


FILESET_ROW = Query(
    "t_fs", "SELECT state, note, attempts, retry_at FROM rcDSFileset WHERE name = %(name)s", "test"
)
CHIP_RUNS = Query("t_runs", "SELECT COUNT(*) FROM chipRun", "test")
OBJECTS = Query("t_obj", "SELECT COUNT(*) FROM storage_object", "test")


def ippctl(mirror: Mirror, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**agent_env(mirror.dsn), "IPP_VAR_DIR": str(mirror.var_dir)}
    return subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def pull(mirror: Mirror, port: int, tmp_path: Path, **settings: Any) -> AgentProcess:
    db = mirror.db
    if not await db.fetch_all(Query("t_src", "SELECT name FROM rcDestination", "test")):
        await db.execute(
            Query(
                "t_add",
                "INSERT INTO rcDestination (name, status_uri, product) VALUES ('src', %(uri)s, 'prod')",
                "test",
            ),
            uri=f"http://127.0.0.1:{port}/ds",
        )
    proc = AgentProcess(
        "dist_client", mirror.dsn, tmp_path, "--once", var_dir=str(mirror.var_dir), **settings
    )
    code = await proc.wait(timeout_s=120)
    assert code == 0, proc.output()
    return proc


async def assert_refused(
    mirror: Mirror, problem: str, name: str = FILESET, *, runs: int = 0, objects: int = 0
) -> None:
    """The fileset is recorded failed with ``problem`` in its reason and a time to be tried
    again; nothing of it was imported; the source's listing moved on past it."""
    row = await mirror.db.fetch_one(FILESET_ROW, name=name)
    assert row is not None and row["state"] == "failed", row
    assert problem in row["note"], row["note"]
    assert row["retry_at"] is not None and row["attempts"] >= 1
    assert await mirror.db.fetch_val(CHIP_RUNS) == runs
    assert await mirror.db.fetch_val(OBJECTS) == objects
    last = await mirror.db.fetch_val(Query("t_last", "SELECT last_fileset FROM rcDestination", "test"))
    assert last is not None


async def test_the_good_fileset_imports(mirror, fake, tmp_path):
    _store, port = fake
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1
    assert await mirror.db.fetch_val(OBJECTS) == 2


def _escape(tmp_path: Path) -> str:
    return str(tmp_path / f"escaped-{uuid.uuid4().hex}")


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        (lambda t: [member(_escape(t))], "absolute path"),
        (lambda t: [member("./../../../escaped")], "absolute path or '..'"),
        (lambda t: [member("./o1.1.ch.1.XY33.link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "is a link"),
        (
            lambda t: [
                member("./o1.1.ch.1.XY33.ch.fits"),
                member("./o1.1.ch.1.XY33.hard", kind=tarfile.LNKTYPE, link="./o1.1.ch.1.XY33.ch.fits"),
            ],
            "is a link",
        ),
        (lambda t: [member("./o1.1.ch.1.XY33.dev", kind=tarfile.CHRTYPE)], "device"),
        (lambda t: [member("./sub/o1.1.ch.1.XY33.ch.fits")], "not './<file name>'"),
        (lambda t: [member("./other.file")], "not a file of its component"),
    ],
)
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


@pytest.mark.parametrize(
    ("listing", "problem"),
    [
        (lambda s: "# fileID|bytes|md5sum|type|\ngarbage line without bars\n", "must end with '|'"),
        (lambda s: s.honest_index().replace("|tgz", "|exe"), "unknown file type"),
    ],
)
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
    assert "no complete answer within 1 s" in proc.events("dist_poll_failed")[0]["reason"]
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0


async def test_a_failed_fileset_waits_its_backoff_and_imports_once_retried(mirror, fake, tmp_path):
    """A failed fileset is not tried again before its backoff; `ippctl dist failed` shows it
    with its reason, `ippctl dist retry` makes the next pass take it."""
    store, port = fake
    store.lie_md5 = True
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "with md5")
    store.lie_md5 = False
    await pull(mirror, port, tmp_path)  # not due yet (dist_retry_s is 300 s)
    assert (await mirror.db.fetch_one(FILESET_ROW, name=FILESET))["state"] == "failed"
    failed = ippctl(mirror, "dist", "failed")
    assert failed.returncode == 0 and FILESET in failed.stdout and "with md5" in failed.stdout
    assert ippctl(mirror, "dist", "retry", FILESET).returncode == 0
    await pull(mirror, port, tmp_path)
    row = await mirror.db.fetch_one(FILESET_ROW, name=FILESET)
    assert row["state"] == "full", row
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1
    unknown = ippctl(mirror, "dist", "retry", "no.such.fileset")
    assert unknown.returncode != 0 and "no failed fileset 'no.such.fileset'" in unknown.stderr


async def test_a_partial_download_is_resumed_with_range(mirror, fake, tmp_path):
    store, port = fake
    bundle, _ = store.files["o1.1.ch.1.XY33.tgz"]
    staging = mirror.var_dir / "dist" / "client" / "src" / FILESET
    staging.mkdir(parents=True)
    (staging / "o1.1.ch.1.XY33.tgz.part").write_bytes(bundle[:40])
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert store.ranges == ["o1.1.ch.1.XY33.tgz bytes=40-"]


async def test_a_client_killed_mid_fileset_leaves_nothing_and_the_next_imports_it(mirror, fake, tmp_path):
    store, port = fake
    store.slow_file_s = 8
    await mirror.db.execute(
        Query(
            "t_add",
            "INSERT INTO rcDestination (name, status_uri, product) VALUES ('src', %(uri)s, 'prod')",
            "test",
        ),
        uri=f"http://127.0.0.1:{port}/ds",
    )
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
    return bool(
        await db.fetch_val(
            Query(
                "t_stale",
                "SELECT COUNT(*) FROM rcDestination d JOIN clients c ON c.client_id = "
                "d.owner WHERE c.heartbeat_at < NOW(6) - INTERVAL 2500000 MICROSECOND",
                "test",
            )
        )
    )


# -- a hostile or broken peer (the mirror must not trust its upstream) ---------------------

OTHER = "o2.chip.2.2.1"
BASE2 = "neb://any/src/20090415/o2.2/o2.2.ch.2"


def second_fileset(
    store: FakeDataStore, data: bytes, *, bundle: bytes | None = None, base: str = BASE2
) -> None:
    """A second fileset after the first, with its own dbinfo (and a bundle for ``base``)."""
    stem = base.rsplit("/", 1)[-1]
    store.filesets = [FILESET, OTHER]
    store.others[OTHER] = {
        "dbinfo.chip.2.mdc": (data, "dbinfo"),
        f"{stem}.XY33.tgz": (bundle or tgz([member(f"./{stem}.XY33.ch.fits", b"image")]), "tgz"),
    }


@pytest.mark.parametrize(
    ("state", "data_state"),
    [("goto_purged", "full"), ("update", "full"), ("error_cleaned", "full"), ("full", "goto_cleaned")],
)
async def test_an_imported_run_must_be_in_a_shipped_state(mirror, fake, tmp_path, state, data_state):
    store, port = fake
    store.files["dbinfo.chip.1.mdc"] = (dbinfo(state=state, data_state=data_state), "dbinfo")
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, f"state {state if state != 'full' else data_state!r}")


async def test_a_run_renumbered_onto_another_runs_storage_is_refused(mirror, fake, tmp_path):
    """chip 1 is imported; then a fileset says chip 999 lives at chip 1's path_base. It is
    refused before any bundle is fetched, and chip 1 keeps every file."""
    store, port = fake
    second_fileset(store, dbinfo(chip_id=999, base=BASE), base=BASE)
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "belongs to chipRun 1", name=OTHER, runs=1, objects=2)
    assert (await mirror.db.fetch_one(FILESET_ROW, name=FILESET))["state"] == "full"


@pytest.mark.parametrize("volume", [None, "elsewhere"])
async def test_cleanup_never_deletes_files_another_run_shares(mirror, fake, tmp_path, volume):
    """Even if two runs share a path_base (a database edited by hand, or a hostile run that
    names the same storage path on another volume: a key's volume is only a preference, so
    neb://a/x and neb://b/x are one file), cleanup of one refuses, naming the other, and
    deletes nothing."""
    _store, port = fake
    await pull(mirror, port, tmp_path)
    imported = await mirror.db.fetch_val(
        Query("t_base", "SELECT path_base FROM chipProcessedImfile WHERE chip_id = 1", "test")
    )
    # confined (the default): under the source's own prefix
    assert imported.startswith("neb://any/") and imported.endswith(BASE.removeprefix("neb://any")), imported
    base = imported if volume is None else imported.replace("neb://any/", f"neb://{volume}/")
    await mirror.db.execute(
        Query(
            "t_copy",
            "INSERT INTO chipRun (chip_id, exp_id, state, "
            "workdir) VALUES (7, 1, 'goto_purged', 'neb://any/x')",
            "test",
        )
    )
    await mirror.db.execute(
        Query(
            "t_copy2",
            "INSERT INTO chipProcessedImfile (chip_id, exp_id, "
            "class_id, data_state, path_base, quality, fault, magicked) "
            "VALUES (7, 1, 'XY33', 'full', %(b)s, 0, 0, 0)",
            "test",
        ),
        b=base,
    )
    proc = AgentProcess("cleanup", mirror.dsn, tmp_path, "--once", var_dir=str(mirror.var_dir))
    assert await proc.wait(timeout_s=120) == 0, proc.output()
    note = await mirror.db.fetch_one(
        Query("t_n", "SELECT state, note FROM chipRun WHERE chip_id = 7", "test")
    )
    assert note["state"] == "error_purged" and "also used by chipRun 1" in note["note"]
    kept = await mirror.db.fetch_val(
        Query("t_kept", "SELECT COUNT(*) FROM storage_object WHERE ext_id LIKE '%%src/%%XY33%%'", "test")
    )
    assert kept == 2


def _twice_the_same_component() -> bytes:
    """chip 2 with its XY33 row twice: the database refuses the second (a duplicate key)."""
    text = dbinfo(chip_id=2, base=BASE2).decode()
    block = text[text.index("chipProcessedImfile  METADATA") :]
    return (text + block).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"dbversion METADATA\n   schema_version S32 \xff\nEND\n", "not UTF-8"),
        (("dbversion METADATA\n" + "b METADATA\n" * 3000 + "END\n" * 3001).encode(), "nested deeper"),
        (
            re.sub(rb"(?m)^   chip_id .*$", b"   chip_id  STR  abc", dbinfo(chip_id=2, base=BASE2), count=1),
            "integer chip_id",
        ),
        (
            dbinfo(chip_id=2, base=BASE2) + b"chipRun METADATA\n   when UTC 9999-12-31T23:59:59-05:00\nEND\n",
            "is not an ISO 8601 UTC time",
        ),
        (dbinfo(chip_id=2, base=BASE2, label="x" * 300), "label"),
        (_twice_the_same_component(), "Duplicate entry"),
    ],
)
async def test_one_bad_dbinfo_fails_its_fileset_and_the_next_goes_on(mirror, fake, tmp_path, data, problem):
    """The bad fileset comes first; the good one after it is imported all the same."""
    store, port = fake
    second_fileset(store, data)
    store.filesets = [OTHER, FILESET]
    proc = await pull(mirror, port, tmp_path)
    assert not proc.events("agent_crashed")
    await assert_refused(mirror, problem, name=OTHER, runs=1, objects=2)
    assert (await mirror.db.fetch_one(FILESET_ROW, name=FILESET))["state"] == "full"


async def test_a_size_field_of_unicode_digits_is_refused(mirror, fake, tmp_path):
    store, port = fake
    store.listing = lambda s: datastore.format_listing(
        datastore.FILE_HEADER,
        [
            (n, "²" if n.endswith(".tgz") else len(d), hashlib.md5(d).hexdigest(), k)
            for n, (d, k) in s.files.items()
        ],
    )
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "is not a number")


async def test_a_deflate_bomb_is_refused_within_its_limit(mirror, fake, tmp_path):
    store, port = fake
    bomb = tgz([member("./o1.1.ch.1.XY33.ch.fits", bytes(40 * 1024 * 1024))])
    assert len(bomb) < 100_000
    store.files["o1.1.ch.1.XY33.tgz"] = (bomb, "tgz")
    await pull(mirror, port, tmp_path, dist_unpack_floor_bytes=1024 * 1024)
    await assert_refused(mirror, "unpacks to more than")
    staging = mirror.var_dir / "dist" / "client" / "src"
    assert not [p for p in staging.rglob("*") if p.is_file()]  # cleaned up


async def test_sparse_and_too_many_members_are_refused(mirror, fake, tmp_path):
    store, port = fake
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("./o1.1.ch.1.XY33.ch.fits")
        info.type, info.size = tarfile.GNUTYPE_SPARSE, 6
        tar.addfile(info, io.BytesIO(b"pixels"))
    store.files["o1.1.ch.1.XY33.tgz"] = (buf.getvalue(), "tgz")
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "is a sparse file")
    many = tgz([member(f"./o1.1.ch.1.XY33.{i}", b"x") for i in range(60)])
    store.files["o1.1.ch.1.XY33.tgz"] = (many, "tgz")
    assert ippctl(mirror, "dist", "retry", FILESET).returncode == 0
    await pull(mirror, port, tmp_path, dist_bundle_max_members=50)
    await assert_refused(mirror, "more than 50 members")


async def test_a_download_stops_at_its_listed_size(mirror, fake, tmp_path):
    store, port = fake
    store.extra_bytes = 8 * 1024 * 1024
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "sent more than")
    staging = mirror.var_dir / "dist" / "client" / "src"
    assert not list(staging.rglob("*.part"))


@pytest.mark.parametrize(
    ("bend", "settings", "problem"),
    [
        ({"encoding": "gzip"}, {}, "Content-Encoding 'gzip' refused"),
        ({}, {"dist_listing_max_bytes": 40}, "more than the 40 bytes"),
        ({"drip_s": 0.05}, {"dist_http_timeout_s": 1}, "no complete answer within 1 s"),
        ({"redirect": "http://localhost:1/elsewhere"}, {}, "redirect to"),
    ],
)
async def test_listings_are_bounded(mirror, fake, tmp_path, bend, settings, problem):
    store, port = fake
    for key, value in bend.items():
        setattr(store, key, value)
    proc = await pull(mirror, port, tmp_path, **settings)
    assert problem in proc.events("dist_poll_failed")[0]["reason"]
    assert await mirror.db.fetch_val(CHIP_RUNS) == 0


async def test_a_listing_of_endless_junk_holds_the_source_at_its_failed_cap(mirror, fake, tmp_path):
    """Red-team finding: one hostile listing made 10 297 failed-fileset rows in 45 s. At
    dist_failed_max_per_source failed filesets the source is held: no new fileset is taken
    (retries still are), the source says why, and another pass adds nothing."""
    store, port = fake
    store.filesets = [f"junk{i}" for i in range(40)]
    proc = await pull(mirror, port, tmp_path, dist_failed_max_per_source=3)
    failed = Query("t_failed", "SELECT name FROM rcDSFileset WHERE state = 'failed' ORDER BY name", "test")
    assert [r["name"] for r in await mirror.db.fetch_all(failed)] == ["junk0", "junk1", "junk2"]
    held = proc.events("dist_source_held")
    assert held and held[0]["source"] == "src" and held[0]["failed"] == 3, proc.output()
    source = await mirror.db.fetch_one(
        Query("t_src_note", "SELECT last_fileset, note FROM rcDestination", "test")
    )
    assert source["last_fileset"] == "junk2" and source["note"].startswith("held: 3 failed filesets")
    again = await pull(mirror, port, tmp_path, dist_failed_max_per_source=3)
    assert len(await mirror.db.fetch_all(failed)) == 3 and again.events("dist_source_held")


async def test_staging_room_is_checked_for_all_filesets_in_flight(mirror, fake, tmp_path):
    """Red-team finding: room was checked per fileset, so sources polled side by side could
    together fill the staging disk. Two sources offer a 48 MB fileset where only one fits
    above the reserve: while the first downloads (its bundle held back by the server), the
    second is refused, naming the bytes promised to the one in flight."""
    store, port = fake
    size = 48 * 1024 * 1024
    store.files["o1.1.ch.1.XY33.tgz"] = (bytes(size), "tgz")
    store.hold_bundles = asyncio.Event()
    for name in ("src", "src2"):
        await mirror.db.execute(
            Query(
                "t_add3",
                "INSERT INTO rcDestination (name, status_uri, product) VALUES (%(name)s, %(uri)s, 'prod')",
                "test",
            ),
            name=name,
            uri=f"http://127.0.0.1:{port}/ds",
        )
    staging = mirror.var_dir / "dist"
    staging.mkdir(parents=True, exist_ok=True)
    reserve = shutil.disk_usage(staging).free - size * 3 // 2  # room for one, not for two
    proc = AgentProcess(
        "dist_client", mirror.dsn, tmp_path, var_dir=str(mirror.var_dir), dist_staging_reserve_bytes=reserve
    )
    refused = Query("t_refused", "SELECT source, note FROM rcDSFileset WHERE state = 'failed'", "test")
    try:
        rows = await eventually(lambda: mirror.db.fetch_all(refused), timeout_s=120, what="a refused fileset")
    finally:
        store.hold_bundles.set()
        proc.kill()
    assert len(rows) == 1 and "bytes in staging" in rows[0]["note"], rows
    assert f"{size + len(dbinfo())} promised to the filesets in flight" in rows[0]["note"], rows[0]["note"]


async def test_a_fileset_named_as_an_imported_one_but_for_case_is_passed_over(mirror, fake, tmp_path):
    """rcDSFileset's key compares names without case: a later fileset whose name differs from
    an imported one only in case would overwrite that one's row. It is passed over, said so,
    and the imported one's row stays as it was."""
    store, port = fake
    await pull(mirror, port, tmp_path)
    clash = "O1.chip.1.1.1"
    store.filesets = [FILESET, clash]
    proc = await pull(mirror, port, tmp_path)
    (event,) = proc.events("dist_fileset_case_clash")
    assert event["fileset"] == clash and event["recorded"] == FILESET
    rows = await mirror.db.fetch_all(Query("t_rows", "SELECT name, state FROM rcDSFileset", "test"))
    assert [(r["name"], r["state"]) for r in rows] == [(FILESET, "full")]
    last = await mirror.db.fetch_val(Query("t_last3", "SELECT last_fileset FROM rcDestination", "test"))
    assert last == clash and not proc.events("dist_imported")


async def test_a_redirect_to_the_same_host_is_followed(mirror, fake, tmp_path):
    store, port = fake
    store.redirect = "?moved=1"
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")


async def test_a_stuck_source_does_not_hold_up_another(mirror, fake, tmp_path):
    """Sources are polled side by side: one that never answers times out while the other
    is imported in the same pass."""
    _store, port = fake
    hung = web.Application()

    async def never(_request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(text="late")

    hung.router.add_get("/{tail:.*}", never)
    runner = web.AppRunner(hung, shutdown_timeout=0.5)
    await runner.setup()
    other = free_port()
    await web.TCPSite(runner, "127.0.0.1", other).start()
    try:
        for name, where in (("src", port), ("aaa-stuck", other)):
            await mirror.db.execute(
                Query(
                    "t_add2",
                    "INSERT INTO rcDestination (name, "
                    "status_uri, product) VALUES (%(name)s, %(uri)s, "
                    "'prod')",
                    "test",
                ),
                name=name,
                uri=f"http://127.0.0.1:{where}/ds",
            )
        proc = await pull(mirror, port, tmp_path, dist_http_timeout_s=3)
    finally:
        await runner.cleanup()
    assert proc.events("dist_imported")
    assert {e["source"] for e in proc.events("dist_poll_failed")} == {"aaa-stuck"}


async def test_a_retried_fileset_imports_without_moving_the_sources_place(mirror, fake, tmp_path):
    store, port = fake
    second_fileset(store, b"dbversion METADATA\n")  # broken at first
    store.filesets = [OTHER, FILESET]
    await pull(mirror, port, tmp_path)
    await assert_refused(mirror, "END", name=OTHER, runs=1, objects=2)
    second_fileset(store, dbinfo(chip_id=2, base=BASE2))  # fixed at the source
    store.filesets = [OTHER, FILESET]
    assert ippctl(mirror, "dist", "retry", OTHER, "--source", "src").returncode == 0
    proc = await pull(mirror, port, tmp_path)
    assert [e["fileset"] for e in proc.events("dist_imported")] == [OTHER]
    assert (await mirror.db.fetch_one(FILESET_ROW, name=OTHER))["state"] == "full"
    last = await mirror.db.fetch_val(Query("t_last2", "SELECT last_fileset FROM rcDestination", "test"))
    assert last == FILESET and await mirror.db.fetch_val(CHIP_RUNS) == 2


def token_file(tmp_path: Path, name: str, value: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


async def test_a_protected_datastore_is_read_with_its_sources_own_token(mirror, fake, tmp_path):
    store, port = fake
    store.token = "t0ken"
    proc = await pull(mirror, port, tmp_path)
    assert "HTTP 401" in proc.events("dist_poll_failed")[0]["reason"]
    given = ippctl(
        mirror, "dist", "source", "token", "src", "--token-file", str(token_file(tmp_path, "t", "t0ken"))
    )
    assert given.returncode == 0 and "token set" in given.stdout, given.stderr
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported")
    assert "t0ken" not in proc.output()


async def test_each_source_gets_its_own_token_and_one_without_gets_none(mirror, tmp_path):
    """Two sources, one protected: it sees only its own token, the other none at all (the
    token of one DataStore never reaches another)."""
    async with (
        serving_fake(fake_store()) as (protected, port_a),
        serving_fake(fake_store()) as (other, port_b),
    ):
        protected.token = "tokA-7f3e"
        added = ippctl(
            mirror, "dist", "source", "add", "a", "--uri", f"http://127.0.0.1:{port_a}/ds",
            "--product", "prod", "--token-file", str(token_file(tmp_path, "a", "tokA-7f3e")),
        )  # fmt: skip
        assert added.returncode == 0 and "with its token" in added.stdout, added.stderr
        other.filesets = ["o1.chip.2.1.1"]
        other.others = {"o1.chip.2.1.1": {"dbinfo.chip.2.mdc": (dbinfo(chip_id=2, base=BASE2), "dbinfo")}}
        added = ippctl(
            mirror,
            "dist",
            "source",
            "add",
            "b",
            "--uri",
            f"http://127.0.0.1:{port_b}/ds",
            "--product",
            "prod",
        )
        assert added.returncode == 0, added.stderr
        proc = AgentProcess("dist_client", mirror.dsn, tmp_path, "--once", var_dir=str(mirror.var_dir))
        assert await proc.wait(timeout_s=120) == 0, proc.output()
    assert {e["source"] for e in proc.events("dist_imported")} == {"a", "b"}
    assert protected.seen_auth and {auth for _, auth in protected.seen_auth} == {"Bearer tokA-7f3e"}
    assert other.seen_auth and {auth for _, auth in other.seen_auth} == {None}
    assert "tokA-7f3e" not in proc.output()
    for args in (("dist", "source", "ls"), ("dist", "source", "ls", "--json")):
        shown = ippctl(mirror, *args)
        assert shown.returncode == 0 and "tokA" not in shown.stdout + shown.stderr
    assert '"has_token": 1' in ippctl(mirror, "dist", "source", "ls", "--json").stdout


async def test_a_redirect_is_followed_without_the_token(mirror, fake, tmp_path):
    store, port = fake
    store.redirect = "?moved=1"  # the same host and port: followed, but not with the token
    await pull(mirror, port, tmp_path)
    given = ippctl(
        mirror, "dist", "source", "token", "src", "--token-file", str(token_file(tmp_path, "t", "tok-r"))
    )
    assert given.returncode == 0, given.stderr
    store.seen_auth.clear()
    await pull(mirror, port, tmp_path)
    listings = [(path, auth) for path, auth in store.seen_auth if "index.txt" in path]
    assert listings and all(auth == "Bearer tok-r" for path, auth in listings if "moved" not in path)
    assert [auth for path, auth in listings if "moved" in path] and all(
        auth is None for path, auth in listings if "moved" in path
    )


def test_a_token_file_others_can_read_or_that_is_not_one_line_is_refused_by_name(mirror, tmp_path):
    for name, value, mode, problem in (
        ("open", "tok", 0o644, "readable by every user"),
        ("empty", "", 0o600, "empty"),
        ("two", "a b", 0o600, "one line"),
    ):
        path = token_file(tmp_path, name, value, mode)
        out = ippctl(
            mirror,
            "dist",
            "source",
            "add",
            "x",
            "--uri",
            "http://127.0.0.1:1/ds",
            "--product",
            "p",
            "--token-file",
            str(path),
        )
        assert out.returncode != 0 and str(path) in out.stderr and problem in out.stderr, out.stderr
    missing = ippctl(mirror, "dist", "source", "token", "nosuch", "--clear")
    assert missing.returncode != 0 and "no source 'nosuch'" in missing.stderr


def test_the_retired_shared_client_token_is_refused_with_what_replaces_it(mirror):
    env = {**agent_env(mirror.dsn), "IPP_VAR_DIR": str(mirror.var_dir), "IPP_DIST_CLIENT_TOKEN": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "agents", "dist_client", "--once"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode != 0 and "dist_client_token is no longer used" in out.stderr
    assert "ippctl dist source token" in out.stderr


def ipp_dbinfo() -> bytes:
    """A chip run's dbinfo as an IPP site writes it: ``dbversion`` a MULTI with the STR
    schema_version (ippTools pxtools.c pxExportVersion), NULLs as psDB reads them
    (psLib psDB.c psDBGetPTypeNaN: the type's largest value, nan) and the gpc1 columns."""
    return (
        "dbversion MULTI\n"
        "dbversion  METADATA\n   schema_version   STR       1.1.72 \nEND\n"
        "chipRun MULTI\n"
        "chipRun  METADATA\n   chip_id  S64  1\n   exp_id  S64  1\n   state  STR  full \n"
        "   workdir  STR  neb://any/src/20090415 \n   label  STR  NULL \n   update_mode  S16  0\n"
        "   maskfrac_npix  F32  nan\nEND\n"
        "chipProcessedImfile MULTI\n"
        "chipProcessedImfile  METADATA\n   chip_id  S64  1\n   exp_id  S64  1\n   class_id  STR  XY33 \n"
        f"   path_base  STR  {BASE} \n   data_state  STR  full \n   n_stars  S32  2147483647\n"
        "   iq_m2  F32  nan\n   deteff_magref  F32  21.5\nEND\n"
    ).encode()


def ipp_bundle(tmp_path: Path) -> bytes:
    """A bundle made as ippScripts/scripts/dist_bundle.pl makes it:
    ``tar -C DIR --owner=ipp --group=users -czhf X.tgz .`` (its first member is ``./``)."""
    src = tmp_path / "bundle-src"
    src.mkdir()
    (src / "o1.1.ch.1.XY33.ch.fits").write_bytes(b"image")
    (src / "o1.1.ch.1.XY33.log").write_bytes(b"log")
    out = tmp_path / "o1.1.ch.1.XY33.tgz"
    subprocess.run(
        ["tar", "-C", str(src), "--owner=ipp", "--group=users", "-czhf", str(out), "."], check=True
    )
    with tarfile.open(out) as tar:
        assert tar.getnames()[0] == "."  # GNU tar's spelling of the root entry ./
    return out.read_bytes()


async def test_a_fileset_made_the_ipp_way_is_imported(mirror, fake, tmp_path):
    """The file listing as the IPP's dsfsindex prints it for a distribution fileset: five
    columns, the fifth the component, dbinfo and dirinfo typed ``text`` (the client's rules,
    DataStore/lib/DataStore/File/Parser.pm: four fields or more, known types from
    DataStore/lib/DataStore/Utils.pm %KNOWN_FILE_TYPES, which has text and tgz and no dbinfo)."""
    store, port = fake
    store.files = {
        "dbinfo.chip.1.mdc": (ipp_dbinfo(), "text"),
        "dirinfo.chip.1.mdc": (b"dirinfo  METADATA\nEND\n", "text"),
        "o1.1.ch.1.XY33.tgz": (ipp_bundle(tmp_path), "tgz"),
    }
    # dist_make_fileset.pl lists dbinfo and dirinfo as text, components dbinfo and dirinfo.
    components = {
        "dbinfo.chip.1.mdc": "dbinfo",
        "dirinfo.chip.1.mdc": "dirinfo",
        "o1.1.ch.1.XY33.tgz": "XY33",
    }

    def listing(s: FakeDataStore) -> str:
        rows = [
            (n, len(d), hashlib.md5(d).hexdigest(), kind, components[n]) for n, (d, kind) in s.files.items()
        ]
        return datastore.format_listing((*datastore.FILE_HEADER, "component"), rows)

    store.listing = listing
    parsed = datastore.parse_files(listing(store), "index.txt")
    assert [(f.name, f.type, f.component) for f in parsed][2] == ("o1.1.ch.1.XY33.tgz", "tgz", "XY33")
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported"), proc.output()
    assert await mirror.db.fetch_val(CHIP_RUNS) == 1
    assert await mirror.db.fetch_val(OBJECTS) == 2
    row = await mirror.db.fetch_one(
        Query("t_ipp_row", "SELECT n_stars, iq_m2, deteff_magref FROM chipProcessedImfile", "test")
    )
    assert row == {"n_stars": None, "iq_m2": None, "deteff_magref": 21.5}


async def test_a_fake_stage_fileset_is_imported(mirror, fake, tmp_path):
    """Seed 002: $exp_name.$stage.$stage_id.$dist_id.$prod_id with stage fake, its components
    bundled as basename(path_base).$class_id.tgz; fakeRun/fakeProcessedImfile with the
    columns of ippTools/share/pxadmin_create_tables.sql."""
    store, port = fake
    base = "neb://any/src/20090415/o1.1/o1.1.fk.7"
    text = (
        "dbversion MULTI\ndbversion  METADATA\n   schema_version  STR  1.1.72 \nEND\n"
        "fakeRun MULTI\nfakeRun  METADATA\n   fake_id  S64  7\n   cam_id  S64  3\n   state  STR  full \n"
        "   workdir  STR  neb://any/src/20090415 \n   epoch  TAI  NULL\nEND\n"
        "fakeProcessedImfile MULTI\nfakeProcessedImfile  METADATA\n   fake_id  S64  7\n   exp_id  S64  1\n"
        f"   class_id  STR  XY33 \n   path_base  STR  {base} \n   data_state  STR  full \n"
        "   dtime_fake  F32  nan\n   fault  S16  0\nEND\n"
    ).encode()
    store.filesets = ["o1.fake.7.11.1"]
    store.files = {
        "dbinfo.fake.7.mdc": (text, "text"),
        "o1.1.fk.7.XY33.tgz": (tgz([member("./o1.1.fk.7.XY33.fake.fits", b"fake")]), "tgz"),
    }
    proc = await pull(mirror, port, tmp_path)
    assert proc.events("dist_imported"), proc.output()
    row = await mirror.db.fetch_one(
        Query(
            "t_fake",
            "SELECT r.state, c.class_id, c.dtime_fake FROM fakeRun r JOIN fakeProcessedImfile c "
            "USING (fake_id) WHERE fake_id = 7",
            "test",
        )
    )
    assert row == {"state": "full", "class_id": "XY33", "dtime_fake": None}
    assert await mirror.db.fetch_val(OBJECTS) == 1


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\u202egnp.exe"


async def test_escape_codes_from_a_hostile_datastore_reach_the_terminal_only_as_visible_escapes(
    mirror, fake, tmp_path
):
    """Issue 33: a DataStore's error body (and a label it shipped) printed raw by ippctl
    could retitle, clear or recolour the operator's terminal."""
    store, port = fake
    store.status, store.error_text = 500, ESCAPES
    await pull(mirror, port, tmp_path)
    await mirror.db.execute(
        Query("t_label", "UPDATE rcDestination SET note = CONCAT('x', %(e)s)", "test"), e=ESCAPES
    )
    store.status = 200
    await pull(mirror, port, tmp_path)  # imported: chip run 1, whose label is then made hostile
    await mirror.db.execute(Query("t_label2", "UPDATE chipRun SET label = %(e)s", "test"), e=ESCAPES)
    store.status = 500
    for args in (("dist", "source", "ls"), ("dist", "failed"), ("runs", "list", "--stage", "chip")):
        out = ippctl(mirror, *args)
        shown = out.stdout + out.stderr
        assert out.returncode == 0, shown
        assert not any(c in shown for c in "\x1b\x07\r\u202e"), (args, shown)
    assert "\\x1b]0;pwned\\x07" in ippctl(mirror, "runs", "list", "--stage", "chip").stdout


async def test_a_download_that_takes_too_long_is_reported_as_a_timeout(mirror, fake, tmp_path):
    """Issue 33: it was reported as "cannot write .part: None" (TimeoutError is an OSError)."""
    store, port = fake
    store.slow_file_s = 30
    proc = await pull(mirror, port, tmp_path, dist_http_timeout_s=1, dist_min_rate_bytes_s=1_000_000_000)
    (failed,) = proc.events("dist_import_failed")
    assert "not complete within" in failed["reason"] and "cannot write" not in failed["reason"]
