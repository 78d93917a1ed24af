"""Distribution client, at a mirror site: import the filesets a source's DataStore publishes.

The story of the sources: claim them and poll them side by side (dist_parallel_sources at
once). The story of one source (rcDestination): first try again the filesets that failed
before and whose backoff has passed; then, unless the source is held for having
dist_failed_max_per_source failed filesets, ask its product for the filesets registered after
the last one handled here, and take each in order. The story of one fileset: read its file
listing; download its dbinfo and check it (this schema version, a shipped state, no
path_base that another run here owns) before anything else is fetched; check the staging
disk has room for it beside the filesets in flight; download every bundle (several at once,
resuming partial files with Range, each checked for size and md5, none read past its listed
size); unpack every bundle safely within its limits; rewrite the run's keys to this site's
volume preference (under the source's own prefix with dist_confine_sources); put the files
into this site's storage; then import the rows and record the fileset done in one transaction.

A peer is never trusted: every request has a deadline and every listing, download and
bundle a size limit (shared.distribution.client, shared.distribution.bundles). Whatever
one fileset does wrong (a malformed listing or dbinfo, a bundle over its limits, a row the
database refuses, a full disk) is recorded on that fileset with the reason and retried later with backoff
(dist_retry_s, doubled per attempt up to dist_retry_max_s); the source's other filesets and
every other source go on. Nothing is written outside staging, files stored before a failed
import are removed again, and re-running a fileset is harmless.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from shared.core.errors import (
    ClaimLost,
    DbConflict,
    DbTimeout,
    DbUnavailable,
    IppError,
    ObjectExists,
    SchemaMismatch,
)
from shared.db.database import Row, Tx
from shared.db.queries import Q
from shared.distribution import bundles, datastore
from shared.distribution import client as dsclient
from shared.distribution.claims import RC_SPEC
from shared.distribution.client import FetchFailed, Limits, download, get_text
from shared.distribution.datastore import RemoteFile
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar
from shared.processing import runio
from shared.processing.runs import other_owners, path_base_owners
from shared.runtime.agent import AgentContext
from shared.storage.keys import parse_key
from shared.storage.store import Storage

NAME = "dist_client"
#: Fileset names (seed 002; ippScripts/scripts/dist_make_fileset.pl): ``$exp_name.`` before
#: ``$stage.$stage_id.$dist_id.$dest_id`` for the stages of one exposure; none for stack and
#: diff (the IPP's ``diff.123.4.5``; this project's own servers wrote ``$exp_name.diff...``).
FILESET = re.compile(
    r"^(?:[A-Za-z0-9_-]+\.(?:raw|chip|camera|fake|warp|diff)\.\d+|(?:stack|diff)\.\d+)"
    r"\.\d+\.\d+\Z"
)
DBINFO = re.compile(r"^dbinfo\.([a-z]+)\.(\d+)\.mdc\Z")
KEY_COLUMNS = ("path_base", "uri", "workdir")
#: Failures of this site's own database that may pass: the fileset is not to blame.
TRANSIENT = (DbUnavailable, DbTimeout, DbConflict, SchemaMismatch)
#: What a peer's bad input (or a full disk) raises on its way through one fileset; each is
#: recorded on the fileset, never let out to stop the agent.
FILESET_ERRORS = (IppError, UnicodeError, ValueError, OverflowError, RecursionError, OSError)
#: Failed filesets tried again per source and pass.
RETRIES_PER_PASS = 20


class ImportFailed(IppError):
    """A fileset that cannot be imported; the reason goes to rcDSFileset.note."""


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    """One HTTP session for the agent's life: no automatic decompression, deadlines on
    every request (shared.distribution.client)."""
    async with dsclient.session(Limits.from_settings(ctx.settings)) as session:
        ctx.resources["http"], ctx.resources["staging"] = session, StagingRoom()
        yield


# -- the sources ---------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """Poll every active source once, dist_parallel_sources at a time; returns how many
    filesets were imported."""
    sources = await ctx.claimer.claim(RC_SPEC, limit=100)
    limit = asyncio.Semaphore(ctx.settings.dist_parallel_sources)

    async def one(source: Row) -> int:
        async with limit:
            try:
                return await poll_source(ctx, source)
            finally:
                await ctx.claimer.release(RC_SPEC, source["id"])

    results = await asyncio.gather(*(one(s) for s in sources), return_exceptions=True)
    for result in results:  # each source was polled to its end; a database error goes on up
        if isinstance(result, BaseException):
            raise result
    return sum(r for r in results if isinstance(r, int))


async def poll_source(ctx: AgentContext, source: Row) -> int:
    """Retry the source's failed filesets that are due, then import its new filesets in
    order; one fileset's failure is recorded on it and the next goes on. Returns how many
    were imported."""
    imported = 0
    for row in await ctx.db.fetch_all(Q.rc_retries_due, source=source["id"], limit=RETRIES_PER_PASS):
        if not ctx.keep_going():
            return imported
        imported += await take_fileset(ctx, source, str(row["name"]), retry=True)
    if await _held(ctx, source):
        return imported
    names = await _new_filesets(ctx, source)
    for name in names:
        if not ctx.keep_going() or await _held(ctx, source):
            break
        done = await take_fileset(ctx, source, name, retry=False)
        if done < 0:
            break
        imported += done
    return imported


async def _held(ctx: AgentContext, source: Row) -> bool:
    """Whether the source has dist_failed_max_per_source failed filesets: then no new one is
    taken (each would add a row) until retries or an operator bring the count down; the
    reason goes on the source."""
    cap = ctx.settings.dist_failed_max_per_source
    failed = int(await ctx.db.fetch_val(Q.rc_failed_count, source=source["id"], cap=cap) or 0)
    if failed < cap:
        return False
    note = (
        f"held: {failed} failed filesets (dist_failed_max_per_source); new filesets are taken "
        "again when fewer have failed (ippctl dist failed, ippctl dist retry)"
    )
    await ctx.db.execute(Q.rc_source_note, id=source["id"], owner=ctx.client_id, note=note)
    ctx.log.warning("dist_source_held", source=source["id"], failed=failed, cap=cap)
    return True


async def _new_filesets(ctx: AgentContext, source: Row) -> list[str]:
    """The fileset names registered after the last one handled here (none if the product
    listing cannot be had or read; the reason goes on the source)."""
    http: aiohttp.ClientSession = ctx.resources["http"]
    url = f"{source['status_uri'].rstrip('/')}/{source['product']}/index.txt"
    if source["last_fileset"]:
        url += f"?{source['last_fileset']}"
    try:
        text = await get_text(http, url, Limits.from_settings(ctx.settings), _token(source))
        return await asyncio.to_thread(datastore.parse_filesets, text, url)
    except FILESET_ERRORS as exc:
        await ctx.db.execute(
            Q.rc_source_note,
            id=source["id"],
            owner=ctx.client_id,
            note=ctx.text.fit("rcDestination", "note", str(exc)),
        )
        ctx.log.warning("dist_poll_failed", source=source["id"], reason=str(exc))
        return []


async def take_fileset(ctx: AgentContext, source: Row, name: str, *, retry: bool) -> int:
    """Import one fileset, or record why not; 1 if imported, 0 if not, -1 if the source
    was taken from us (stop polling it)."""
    ctx.begin_item(f"{source['id']} {name}")
    try:
        if not FILESET.match(name):
            raise ImportFailed(
                f"fileset name {name!r} does not follow $exp_name.$stage.$stage_id.$dist_id.$prod_id"
            )
        done = await ctx.db.fetch_one(Q.rc_fileset_get, source=source["id"], name=name)
        if done is not None and done["name"] != name:
            # rcDSFileset's key compares without case: recording this one (failed or done)
            # would overwrite the other's row. It is passed over, and said so.
            ctx.log.warning(
                "dist_fileset_case_clash", source=source["id"], fileset=name, recorded=done["name"]
            )
            await _passed(ctx, source, name, retry)
            ctx.item_failed(f"fileset {name} differs only in case from {done['name']}, recorded here")
            return 0
        if done is not None and done["state"] == "full":
            ctx.log.info("dist_already_imported", source=source["id"], fileset=name)
            await _passed(ctx, source, name, retry)
            ctx.item_done()
            return 0  # listed again (a server that ignores ?last): nothing to do
        if done is not None and done["state"] == "failed" and not retry:
            ctx.item_done()
            return 0  # listed again: it waits for its retry (rcDSFileset.retry_at)
        await import_fileset(ctx, source, name, retry=retry)
        ctx.item_done()
        return 1
    except ClaimLost as exc:  # the source was released meanwhile: leave it to its owner
        ctx.log.warning("dist_claim_lost", source=source["id"], fileset=name, error=str(exc))
        ctx.item_failed(str(exc))
        return -1
    except TRANSIENT:
        raise
    except FILESET_ERRORS as exc:
        await _record_failure(ctx, source, name, exc, retry)
        return 0


async def _passed(ctx: AgentContext, source: Row, name: str, retry: bool) -> None:
    if not retry:
        await ctx.db.execute(Q.rc_fileset_passed, id=source["id"], owner=ctx.client_id, fileset=name)


async def _record_failure(ctx: AgentContext, source: Row, name: str, exc: BaseException, retry: bool) -> None:
    """The fileset failed: its reason, when it is tried again (backoff with jitter), and the
    source's listing moves past it."""
    reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, IppError) else str(exc)
    row = await ctx.db.fetch_one(Q.rc_fileset_get, source=source["id"], name=name)
    attempts = int(row["attempts"]) if row is not None else 0
    wait_s = min(ctx.settings.dist_retry_s * 2**attempts, ctx.settings.dist_retry_max_s)
    wait_s *= random.uniform(0.8, 1.2)

    async def record(tx: Tx) -> None:
        await tx.execute(
            Q.rc_fileset_failed,
            source=source["id"],
            name=name,
            note=ctx.text.fit("rcDSFileset", "note", reason),
            retry_s=round(wait_s, 3),
        )
        if not retry:
            await tx.execute(Q.rc_fileset_passed, id=source["id"], owner=ctx.client_id, fileset=name)
        await tx.execute(
            Q.rc_source_note,
            id=source["id"],
            owner=ctx.client_id,
            note=ctx.text.fit("rcDestination", "note", f"{name}: {reason}"),
        )

    await ctx.db.transaction(record, name="dist_fileset_failed")
    ctx.log.error(
        "dist_import_failed",
        source=source["id"],
        fileset=name,
        reason=reason,
        attempts=attempts + 1,
        retry_in_s=round(wait_s),
    )
    ctx.count("filesets_failed")
    ctx.item_failed(reason)


# -- one fileset ---------------------------------------------------------------------------


def _token(source: Row) -> str:
    """The source's own bearer token (``ippctl dist source token``), for its URLs only."""
    return str(source["token"] or "")


@dataclass
class Fileset:
    """One fileset on its way in: where it is, its files, its staging directory."""

    source: Row
    name: str
    url: str
    files: list[RemoteFile]
    staging: Path
    #: keys stored at this site so far (removed again if the import fails)
    stored: list[str] = field(default_factory=list)


async def import_fileset(ctx: AgentContext, source: Row, name: str, *, retry: bool = False) -> int:
    """Import one fileset; returns how many files went into storage. A new fileset moves
    the source's place in its listing to it; a retried one leaves the place alone."""
    http: aiohttp.ClientSession = ctx.resources["http"]
    limits = Limits.from_settings(ctx.settings)
    url = f"{source['status_uri'].rstrip('/')}/{source['product']}/{name}"
    text = await get_text(http, f"{url}/index.txt", limits, _token(source))
    files = await asyncio.to_thread(datastore.parse_files, text, f"{url}/index.txt")
    staging = ctx.settings.dist_staging() / "client" / source["id"] / name
    fs = Fileset(source, name, url, files, staging)
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
    try:
        info = await _fetch_dbinfo(ctx, fs)
        with await _room(ctx, fs):
            items, digests = await _download_and_unpack(ctx, fs, info)
            storage = Storage(ctx.db)
            fs.stored = await _store(storage, items, digests)
        result = await _import_rows(ctx, fs, info, retry)
    except FetchFailed:
        await asyncio.to_thread(shutil.rmtree, staging / "x", True)  # downloads kept to resume
        raise
    except BaseException:
        if fs.stored:
            await Storage(ctx.db).delete_many(fs.stored)
        await asyncio.to_thread(shutil.rmtree, staging, True)
        raise
    await asyncio.to_thread(shutil.rmtree, staging, True)
    ctx.log.info(
        "dist_imported",
        source=source["id"],
        fileset=name,
        stage=info.stage,
        run_id=info.run_id,
        files=len(items),
        rows=result.rows,
        already_present=result.already_present,
    )
    ctx.count("filesets_imported")
    return len(items)


async def _fetch_dbinfo(ctx: AgentContext, fs: Fileset) -> RunInfo:
    """Download and check the fileset's dbinfo before any bundle is fetched."""
    # Typed dbinfo here, text by the IPP's distribution (which lists dirinfo as text beside it).
    dbinfos = [f for f in fs.files if f.type == "dbinfo" or (f.type == "text" and DBINFO.match(f.name))]
    if len(dbinfos) != 1 or not DBINFO.match(dbinfos[0].name):
        raise ImportFailed(
            f"fileset {fs.name}: needs exactly one dbinfo.<stage>.<id>.mdc "
            f"file, found {[f.name for f in dbinfos][:5]}"
        )
    (f,) = dbinfos
    if f.bytes > ctx.settings.dist_listing_max_bytes:
        raise ImportFailed(
            f"fileset {fs.name}: dbinfo of {f.bytes} bytes, more than "
            f"dist_listing_max_bytes ({ctx.settings.dist_listing_max_bytes})"
        )
    await download(
        ctx.resources["http"],
        f"{fs.url}/{f.name}",
        f,
        fs.staging / f.name,
        Limits.from_settings(ctx.settings),
        _token(fs.source),
    )
    raw = await asyncio.to_thread((fs.staging / f.name).read_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{fs.name}/{f.name}: not UTF-8 text (byte {exc.start})") from None
    prefix = fs.source["id"] if ctx.settings.dist_confine_sources else ""
    info = await asyncio.to_thread(
        read_dbinfo, text, f"{fs.name}/{f.name}", ctx.settings.dist_mirror_volume, prefix
    )
    owners = await path_base_owners(ctx.db, info.path_bases)
    for base in info.path_bases:
        shared = other_owners(owners, base, info.stage, info.run_id)
        if shared:
            raise ImportFailed(
                f"{fs.name}: path_base {base} belongs to {', '.join(shared)} "
                f"here; {info.stage} {info.run_id} may not share its storage"
            )
    return info


class StagingRoom:
    """The staging bytes the filesets in flight have been promised (dist_parallel_sources of
    them download at once): the room each new one needs is checked against the free space
    less all of these, not only against its own."""

    def __init__(self) -> None:
        self.promised = 0

    @contextmanager
    def promise(self, need: int) -> Iterator[None]:
        self.promised += need
        try:
            yield
        finally:
            self.promised -= need


async def _room(ctx: AgentContext, fs: Fileset) -> AbstractContextManager[None]:
    """Promise the fileset's bytes in staging, or refuse it if they would not fit beside
    those of the filesets in flight (leaving dist_staging_reserve_bytes free)."""
    room: StagingRoom = ctx.resources["staging"]
    need = sum(f.bytes for f in fs.files)
    free = (await asyncio.to_thread(shutil.disk_usage, fs.staging)).free
    reserve = ctx.settings.dist_staging_reserve_bytes
    if free - room.promised - need < reserve:  # no await from here to the promise
        others = f", {room.promised} promised to the filesets in flight" if room.promised else ""
        raise ImportFailed(
            f"fileset {fs.name}: needs {need} bytes in staging, {free} are free{others} "
            f"(dist_staging_reserve_bytes {reserve} must stay free)"
        )
    return room.promise(need)


async def _import_rows(ctx: AgentContext, fs: Fileset, info: RunInfo, retry: bool) -> runio.ImportResult:
    """The run's rows and the fileset's record, in one transaction."""

    async def record(tx: Tx) -> None:
        await tx.execute(
            Q.rc_fileset_state, source=fs.source["id"], name=fs.name, state="full", fault=0, note=None
        )
        await ctx.claimer.finish_in(
            tx,
            RC_SPEC,
            Q.rc_fileset_retried if retry else Q.rc_fileset_done,
            fs.source["id"],
            fileset=fs.name,
        )
        ctx.claimer.held.add(RC_SPEC, [fs.source["id"]])  # still ours: more filesets follow
        note = f"destreaked at source {fs.source['id']} (fileset {fs.name})"
        await tx.execute(Q.dist_record_streak_run, magic_id=info.magicked, note=note)
        await tx.execute(
            Q.dist_record_destreak,
            magic_id=info.magicked,
            stage=info.stage,
            stage_id=info.run_id,
            note=note,
        )

    return await runio.import_run(ctx.db, info.text, f"{fs.name}/dbinfo", also=record)


# -- the dbinfo ----------------------------------------------------------------------------


@dataclass
class RunInfo:
    stage: str
    run_id: int
    text: str
    #: bundle file name -> (key directory, file name prefix) of the component's files
    bundles: dict[str, tuple[str, str]]
    #: the path_base of every component (after rewriting)
    path_bases: list[str]
    #: the run's magicked as shipped (> 0: destreaked by that streak run)
    magicked: int = 0


def _rewrite(key: str, volume: str, prefix: str) -> str:
    """A source key on this site's volume preference (the path is kept, under ``prefix``
    when sources are confined)."""
    path = parse_key(key).path
    return f"neb://{volume}/{prefix}/{path}" if prefix else f"neb://{volume}/{path}"


def read_dbinfo(text: str, source: str, volume: str, prefix: str = "") -> RunInfo:
    """Parse and check the run export; rewrite its keys; name the bundles it implies."""
    doc = mdc.loads(text, source)
    try:
        runio.check_version(doc)
        st = runio.stage_of(doc)
    except runio.RunIoError as exc:
        raise ImportFailed(f"{source}: {exc}") from None
    found: dict[str, tuple[str, str]] = {}
    bases: list[str] = []
    run_id = None
    magicked = 0
    for table, row in doc.entries:
        if not isinstance(row, Block):
            continue
        for column in KEY_COLUMNS:
            value = row.get(column)
            if isinstance(value, Scalar) and isinstance(value.value, str) and value.value:
                row.set(column, Scalar("STR", _rewrite(value.value, volume, prefix)))
        if table == st.run_table:
            ident = row.value(st.id_column)
            run_id = ident if isinstance(ident, int) else None
            shipped = row.value("magicked")
            magicked = shipped if isinstance(shipped, int) else 0
        if table == st.component_table or (st.component_table is None and table == st.run_table):
            base = row.value("path_base")
            if st.name == "raw":  # a raw image is owned by its uri; its bundle is named for
                base = row.value("uri")  # the uri without .fits (disttool_pending_raw.sql)
            if isinstance(base, str) and base:
                bases.append(base)
                key = parse_key(base)
                directory, _, stem = key.path.rpartition("/")
                comp = row.value(st.component_key) if st.component_key else None
                if st.name == "raw":
                    stem = stem.removesuffix(".fits")
                named = f"{directory}/{stem}"
                found[bundles.bundle_name(st.name, named, str(comp) if comp else None)] = (directory, stem)
                found.setdefault(f"{stem}.tgz", (directory, stem))  # a run's own files
    if run_id is None:
        raise ImportFailed(f"{source}: no {st.run_table} row with an integer {st.id_column}")
    return RunInfo(st.name, run_id, mdc.dumps(doc), found, bases, magicked)


# -- bundles and storage -------------------------------------------------------------------


async def _download_and_unpack(
    ctx: AgentContext, fs: Fileset, info: RunInfo
) -> tuple[list[tuple[str, Path]], dict[Path, tuple[int, str]]]:
    """Download the bundles (dist_parallel at once, md5 checked) and extract each one as
    soon as it is complete, into its own staging directory within its limits, while the
    others still arrive; returns (storage key, file) per member and each file's (bytes,
    md5). Every download runs to its end; a failed one is the reason given first (its
    partial file is kept for resuming), then a bundle that would not unpack."""
    tgzs = [f for f in fs.files if f.type == "tgz"]
    owners = {}
    for f in tgzs:
        owner = info.bundles.get(f.name)
        if owner is None:
            raise ImportFailed(f"bundle {f.name} belongs to no component of {info.stage} {info.run_id}")
        owners[f.name] = owner
    fetching, unpacking = (
        asyncio.Semaphore(ctx.settings.dist_parallel),
        asyncio.Semaphore(ctx.settings.dist_parallel),
    )
    limits = Limits.from_settings(ctx.settings)
    s = ctx.settings

    async def one(f: RemoteFile) -> dict[Path, tuple[int, str]]:
        async with fetching:
            await download(
                ctx.resources["http"], f"{fs.url}/{f.name}", f, fs.staging / f.name, limits, _token(fs.source)
            )
        into = fs.staging / "x" / f.name
        caps = bundles.UnpackLimits.for_bundle(
            f.bytes,
            ratio=s.dist_unpack_ratio_max,
            floor_bytes=s.dist_unpack_floor_bytes,
            max_members=s.dist_bundle_max_members,
            reserve_bytes=s.dist_staging_reserve_bytes,
        )
        async with unpacking:
            await asyncio.to_thread(shutil.rmtree, into, True)
            return await asyncio.to_thread(bundles.extract, fs.staging / f.name, into, caps)

    results = await asyncio.gather(*(one(f) for f in tgzs), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise next((e for e in failures if isinstance(e, FetchFailed)), failures[0])
    items, digests = [], {}
    for f, written in zip(tgzs, results, strict=True):
        assert not isinstance(written, BaseException)
        directory, stem = owners[f.name]
        for path in written:
            if not path.name.startswith(stem):
                raise ImportFailed(
                    f"bundle {f.name}: member {path.name} is not a file of its component ({stem}*)"
                )
            items.append((f"neb://any/{directory}/{path.name}", path))
        digests.update(written)
    return items, digests


async def _store(
    storage: Storage, items: list[tuple[str, Path]], digests: dict[Path, tuple[int, str]]
) -> list[str]:
    """Put the files into storage; those already there with the same md5 are kept (a redo).
    Returns the keys stored now (to remove if the import then fails)."""
    known = await storage.stat_many([k for k, _ in items])
    fresh = []
    for key, path in items:
        row = known.get(parse_key(key).path)
        if row is None:
            fresh.append((key, path))
            continue
        _size, md5 = digests[path]
        if row["md5sum"] != md5:
            raise ImportFailed(f"{key} exists here with other content (md5 {row['md5sum']})")
    try:
        await storage.create_many_by_moving(fresh, digests=digests)
    except ObjectExists as exc:
        raise ImportFailed(f"a file was stored meanwhile by someone else: {exc}") from None
    return [k for k, _ in fresh]
