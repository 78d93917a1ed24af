"""Distribution client, at a mirror site: import the filesets a source's DataStore publishes.

The story of one source (rcDestination): claim it; ask its product for the filesets
registered after the last one finished here. For each new fileset, in order: download every
file into staging (several at once, resuming partial files with Range), check each file's
size and md5; parse the dbinfo (refusing another schema version); unpack every bundle safely
into staging; rewrite the run's path_base / uri / workdir keys to this site's volume
preference; put the files into this site's storage; then import the rows and record the
fileset done in one transaction. A fileset that fails is recorded failed with the reason and
stops the source for this pass (order matters); nothing is written outside staging, and
files stored before a failed import are removed again. Re-running a fileset is harmless.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from shared import bundles, datastore, mdc, runio
from shared.datastore import DataStoreError, RemoteFile
from shared.db import Row, Tx
from shared.dsclient import download, get_text
from shared.errors import ClaimLost, DbError, IppError, MdcError, ObjectExists
from shared.mdc import Block, Scalar
from shared.queries import Q
from shared.runtime.agent import AgentContext
from shared.runtime.claims import ClaimSpec, register_claimable
from shared.storage import Storage, parse_key

NAME = "dist_client"
RC_SPEC = register_claimable(ClaimSpec(
    table="rcDestination", id_column="id", select=Q.rc_claim, mark=Q.claim_mark_rcDestination,
    release=Q.claim_release_rcDestination, release_orphans=Q.claim_release_orphans_rcDestination))
FILESET = re.compile(r"^(?:[A-Za-z0-9_-]+\.(?:raw|chip|camera|warp|diff)\.\d+|stack\.\d+)"
                     r"\.\d+\.\d+$")
DBINFO = re.compile(r"^dbinfo\.([a-z]+)\.(\d+)\.mdc$")
KEY_COLUMNS = ("path_base", "uri", "workdir")


class ImportFailed(IppError):
    """A fileset that cannot be imported; the reason goes to rcDSFileset.note."""


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    """One HTTP session for the agent's life, with the request deadline of the settings."""
    timeout = aiohttp.ClientTimeout(total=None, connect=ctx.settings.dist_http_timeout_s,
                                    sock_read=ctx.settings.dist_http_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        ctx.resources["http"] = session
        yield


# -- the dbinfo ----------------------------------------------------------------------------


@dataclass
class RunInfo:
    stage: str
    run_id: int
    text: str
    #: bundle file name -> (key directory, file name prefix) of the component's files
    bundles: dict[str, tuple[str, str]]


def _rewrite(key: str, volume: str) -> str:
    """A source key on this site's volume preference (the path is kept)."""
    return f"neb://{volume}/{parse_key(key).path}"


def read_dbinfo(text: str, source: str, volume: str) -> RunInfo:
    """Parse and check the run export; rewrite its keys; name the bundles it implies."""
    doc = mdc.loads(text, source)
    try:
        runio.check_version(doc)
        st = runio.stage_of(doc)
    except runio.RunIoError as exc:
        raise ImportFailed(f"{source}: {exc}") from None
    found: dict[str, tuple[str, str]] = {}
    run_id = None
    for table, row in doc.entries:
        if not isinstance(row, Block):
            continue
        for column in KEY_COLUMNS:
            value = row.get(column)
            if isinstance(value, Scalar) and isinstance(value.value, str) and value.value:
                row.set(column, Scalar("STR", _rewrite(value.value, volume)))
        if table == st.run_table:
            ident = row.value(st.id_column)
            run_id = int(ident) if ident is not None else None
        if table == st.component_table or (st.component_table is None and table == st.run_table):
            base = row.value("path_base")
            if isinstance(base, str) and base:
                key = parse_key(base)
                directory, _, stem = key.path.rpartition("/")
                comp = row.value(st.component_key) if st.component_key else None
                found[bundles.bundle_name(st.name, base, str(comp) if comp else None)] = (
                    directory, stem)
                found.setdefault(f"{stem}.tgz", (directory, stem))  # a run's own files
    if run_id is None:
        raise ImportFailed(f"{source}: no {st.run_table} row with {st.id_column}")
    return RunInfo(st.name, run_id, mdc.dumps(doc), found)


# -- one fileset ---------------------------------------------------------------------------


async def import_fileset(ctx: AgentContext, source: Row, name: str) -> int:
    """Import one fileset; returns how many files went into storage."""
    session: aiohttp.ClientSession = ctx.resources["http"]
    base = f"{source['status_uri'].rstrip('/')}/{source['product']}/{name}"
    files = datastore.parse_files(await get_text(session, f"{base}/index.txt"),
                                  f"{base}/index.txt")
    dbinfos = [f for f in files if f.type == "dbinfo"]
    if len(dbinfos) != 1 or not DBINFO.match(dbinfos[0].name):
        raise ImportFailed(f"fileset {name}: needs exactly one dbinfo.<stage>.<id>.mdc file, "
                           f"found {[f.name for f in dbinfos]}")
    staging = ctx.settings.dist_staging() / "client" / source["id"] / name
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
    limit = asyncio.Semaphore(ctx.settings.dist_parallel)

    async def fetch(f: RemoteFile) -> None:
        async with limit:
            await download(session, f"{base}/{f.name}", f, staging / f.name)

    await asyncio.gather(*(fetch(f) for f in files))
    text = await asyncio.to_thread((staging / dbinfos[0].name).read_text)
    info = read_dbinfo(text, f"{name}/{dbinfos[0].name}", ctx.settings.dist_mirror_volume)
    items, digests = await _unpack(ctx, staging, [f for f in files if f.type == "tgz"], info)
    storage = Storage(ctx.db)
    stored = await _store(storage, items, digests)
    try:
        async def record(tx: Tx) -> None:
            await tx.execute(Q.rc_fileset_state, source=source["id"], name=name, state="full",
                             fault=0, note=None)
            await ctx.claimer.finish_in(tx, RC_SPEC, Q.rc_fileset_done, source["id"],
                                        fileset=name)
            ctx.claimer.held.add(RC_SPEC, [source["id"]])  # still ours: more filesets follow

        result = await runio.import_run(ctx.db, info.text, f"{name}/{dbinfos[0].name}",
                                        also=record)
    except BaseException:
        if stored:
            await storage.delete_many(stored)
        raise
    await asyncio.to_thread(shutil.rmtree, staging, True)
    ctx.log.info("dist_imported", source=source["id"], fileset=name, stage=info.stage,
                 run_id=info.run_id, files=len(items), rows=result.rows,
                 already_present=result.already_present)
    ctx.count("filesets_imported")
    return len(items)


async def _unpack(ctx: AgentContext, staging: Path, tgzs: list[RemoteFile], info: RunInfo
                  ) -> tuple[list[tuple[str, Path]], dict[Path, tuple[int, str]]]:
    """Extract the bundles (several at once), each into its own staging directory; returns
    (storage key, file) per member and the (bytes, md5) of each file."""
    owners = {}
    for f in tgzs:
        owner = info.bundles.get(f.name)
        if owner is None:
            raise ImportFailed(f"bundle {f.name} belongs to no component of {info.stage} "
                               f"{info.run_id}")
        owners[f.name] = owner
    limit = asyncio.Semaphore(ctx.settings.dist_parallel)

    async def one(name: str) -> dict[Path, tuple[int, str]]:
        into = staging / "x" / name
        async with limit:
            await asyncio.to_thread(shutil.rmtree, into, True)
            return await asyncio.to_thread(bundles.extract, staging / name, into)

    results = await asyncio.gather(*(one(f.name) for f in tgzs))
    items, digests = [], {}
    for f, written in zip(tgzs, results, strict=True):
        directory, stem = owners[f.name]
        for path in written:
            if not path.name.startswith(stem):
                raise ImportFailed(f"bundle {f.name}: member {path.name} is not a file of "
                                   f"its component ({stem}*)")
            items.append((f"neb://any/{directory}/{path.name}", path))
        digests.update(written)
    return items, digests


async def _store(storage: Storage, items: list[tuple[str, Path]],
                 digests: dict[Path, tuple[int, str]]) -> list[str]:
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


# -- one source ----------------------------------------------------------------------------


async def poll_source(ctx: AgentContext, source: Row) -> int:
    """Import every new fileset of one source, in order; returns how many were imported."""
    session: aiohttp.ClientSession = ctx.resources["http"]
    url = f"{source['status_uri'].rstrip('/')}/{source['product']}/index.txt"
    if source["last_fileset"]:
        url += f"?{source['last_fileset']}"
    imported = 0
    try:
        names = datastore.parse_filesets(await get_text(session, url), url)
    except (ImportFailed, DataStoreError) as exc:
        await ctx.db.execute(Q.rc_source_note, id=source["id"], owner=ctx.client_id,
                             note=str(exc)[:255])
        ctx.log.warning("dist_poll_failed", source=source["id"], reason=str(exc))
        return 0
    for name in names:
        if not ctx.keep_going():
            break
        ctx.begin_item(f"{source['id']} {name}")
        try:
            if not FILESET.match(name):
                raise ImportFailed(f"fileset name {name!r} does not follow "
                                   "$exp_name.$stage.$stage_id.$dist_id.$prod_id")
            done = await ctx.db.fetch_one(Q.rc_fileset_get, source=source["id"], name=name)
            if done is not None and done["state"] == "full":
                ctx.log.info("dist_already_imported", source=source["id"], fileset=name)
                ctx.item_done()
                continue  # listed again (a server that ignores ?last): nothing to do
            await import_fileset(ctx, source, name)
            imported += 1
            ctx.item_done()
        except ClaimLost as exc:  # the source was released meanwhile: leave it to its owner
            ctx.log.warning("dist_claim_lost", source=source["id"], fileset=name,
                            error=str(exc))
            ctx.item_failed(str(exc))
            break
        except DbError:
            raise
        except (IppError, MdcError) as exc:
            await ctx.db.execute(Q.rc_fileset_state, source=source["id"], name=name,
                                 state="failed", fault=1, note=str(exc)[:1024])
            await ctx.db.execute(Q.rc_source_note, id=source["id"], owner=ctx.client_id,
                                 note=f"{name}: {exc}"[:255])
            ctx.log.error("dist_import_failed", source=source["id"], fileset=name,
                          reason=str(exc))
            ctx.item_failed(str(exc))
            break  # later filesets wait for this one (order matters)
    return imported


async def run_once(ctx: AgentContext) -> int:
    """Poll every active source once; returns how many filesets were imported."""
    imported = 0
    for source in await ctx.claimer.claim(RC_SPEC, limit=100):
        try:
            imported += await poll_source(ctx, source)
        finally:
            await ctx.claimer.release(RC_SPEC, source["id"])
    return imported

