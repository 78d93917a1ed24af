"""Distribution server: ship queued runs as DataStore filesets, and serve the DataStore.

The story of one queued run (distRun in state new): claim it; export its rows as
``dbinfo.<stage>.<id>.mdc`` (cleaned rows for a ``--clean`` distribution); build one gzip'd
tar per component from its files in storage (REFERENCE 7 names, ``./<basename>`` members,
streamed through a fast gzip); move the bundles into storage; then, in one transaction,
register the fileset with every file's bytes and md5 on the product, record the components
and mark the run shipped. The fileset is visible only once that transaction commits. Standing
targets (distTarget) queue new full runs of their dist_group and stage on every pass.

While it runs, the agent serves the DataStore over HTTP (``ds_host:ds_port``) for the
mirrors' dist_client agents to poll.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from shared.core.errors import IppError
from shared.db.database import Row, Tx
from shared.db.queries import Q
from shared.distribution import bundles, datastore
from shared.distribution import server as dsserver
from shared.distribution.claims import DIST_SPEC, DistRun
from shared.processing import runio, runs
from shared.processing.filerules import rules_for
from shared.processing.stages import stage, stage_query
from shared.runtime.agent import AgentContext, ItemEvents
from shared.runtime.httpserver import ServerLimits, serving
from shared.storage.keys import parse_key
from shared.storage.store import Storage

NAME = "dist_server"
EVENTS = ItemEvents(claim_lost="dist_claim_lost", failed="dist_failed")


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """Queue what standing targets ask for, then ship queued runs one at a time."""
    await queue_targets(ctx)
    handled = 0
    async for (row,) in ctx.claimed(DIST_SPEC, limit=1):
        dist = DistRun.from_row(row)

        async def failed(reason: str, dist: DistRun = dist) -> None:  # it cannot be shipped now
            if ctx.claimer.held.items():
                await ctx.claimer.finish(
                    DIST_SPEC,
                    Q.dist_finish,
                    dist.id,
                    state="error",
                    fault=1,
                    fileset=None,
                    note=ctx.text.fit("distRun", "note", reason),
                )

        log = ctx.log.bind(dist_id=dist.id, stage=dist.stage, run_id=dist.stage_id)
        async with ctx.working_on(
            f"dist {dist.id} {dist.stage} {dist.stage_id}",
            EVENTS,
            failed,
            failures=(IppError, OSError),
            log=log,
        ):
            await ship(ctx, dist)
        handled += 1
    return handled


async def queue_targets(ctx: AgentContext) -> int:
    """Queue the full runs that standing targets (distTarget) ask for; returns how many."""
    queued = 0
    for t in await ctx.db.fetch_all(Q.dist_targets_enabled):
        for run in await ctx.db.fetch_all(
            stage_query("dist_candidates", t["stage"]),
            dist_group=t["dist_group"],
            product=t["product"],
            clean=t["clean"],
            limit=1000,
        ):
            queued += await ctx.db.execute(
                Q.dist_queue,
                target_id=t["target_id"],
                stage=t["stage"],
                stage_id=run["id"],
                label=run["label"],
                clean=t["clean"],
                product=t["product"],
                no_magic=t["no_magic"],
            )
    if queued:
        ctx.log.info("dist_targets_queued", runs=queued)
    return queued


# -- one run -------------------------------------------------------------------------------


async def ship(ctx: AgentContext, dist: DistRun) -> None:
    """Build and register the fileset of one claimed distRun."""
    storage = Storage(ctx.db)
    stage_name, run_id = dist.stage, dist.stage_id
    prod = await datastore.product(ctx.db, dist.product)
    run = await runs.get_run(ctx.db, stage_name, run_id)
    if run["state"] not in ("full", "cleaned"):
        raise ShipFailed(
            f"{stage(stage_name).run_table} {run_id} is {run['state']}: only full "
            "or cleaned runs are distributed"
        )
    exp_name = await _exp_name(ctx, stage_name, run)
    name = bundles.fileset_name(stage_name, run_id, exp_name, dist.id, prod["prod_id"])
    prefix = f"datastore/{dist.product}/{name}/"
    # a redo after a crash: what an earlier attempt stored but never registered
    await storage.delete_under(prefix)
    staging = ctx.settings.dist_staging() / "server" / name
    await asyncio.to_thread(shutil.rmtree, staging, True)
    await asyncio.to_thread(staging.mkdir, parents=True)
    try:
        files = await _run_info(ctx, dist, run, staging, prefix)
        built = await _bundles(ctx, storage, dist, staging)
        files += [
            datastore.NewFile(
                n, b.bytes, b.md5sum, "tgz", f"neb://any/{prefix}{n}", component or bundles.RUN_COMPONENT
            )
            for n, component, b in built
        ]
        await storage.create_many_by_moving([(f.uri, staging / f.name) for f in files])

        async def register(tx: Tx) -> None:
            await datastore.register_fileset(
                tx, prod, name, datastore.DIST_FILESET, _column_values(prod, dist, exp_name), files
            )
            for n, component, b in built:
                await tx.execute(
                    Q.dist_component_add,
                    dist_id=dist.id,
                    component=component or bundles.RUN_COMPONENT,
                    bytes=b.bytes,
                    md5sum=b.md5sum,
                    name=n,
                )
            await ctx.claimer.finish_in(
                tx, DIST_SPEC, Q.dist_finish, dist.id, state="full", fault=0, fileset=name, note=None
            )

        await ctx.db.transaction(register, name="dist_register")
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    ctx.log.info(
        "dist_shipped",
        dist_id=dist.id,
        stage=stage_name,
        run_id=run_id,
        product=dist.product,
        fileset=name,
        files=len(files),
        bytes=sum(f.bytes for f in files),
    )
    ctx.count("filesets_shipped")
    ctx.count("bytes_shipped", sum(f.bytes for f in files))


async def _run_info(
    ctx: AgentContext, dist: DistRun, run: Row, staging: Path, prefix: str
) -> list[datastore.NewFile]:
    """Write the run's ``dbinfo`` (its export) and ``dirinfo`` (where its components'
    products lie) into ``staging``: files of type text whose component is dbinfo and
    dirinfo, as the IPP's ``dist_make_fileset.pl`` lists them."""
    stage_name, run_id = dist.stage, dist.stage_id
    doc = await runio.export_run(ctx.db, stage_name, run_id, clean=dist.clean)
    comps = await runs.components(ctx.db, stage_name, run_id)
    where = [(c.component, (c.uri if stage_name == "raw" else c.path_base) or "") for c in comps]
    if stage_name == "chip" and comps:  # the run's own files (mosaics) travel as a component too
        where.append((bundles.RUN_COMPONENT, comps[0].path_base))
    texts = {
        "dbinfo": runio.export_text(doc),
        "dirinfo": bundles.dirinfo(stage_name, run["workdir"], where),
    }
    files = []
    for kind, text in texts.items():
        path = staging / f"{kind}.{stage_name}.{run_id}.mdc"
        await asyncio.to_thread(path.write_text, text)
        size, md5 = await asyncio.to_thread(bundles.file_digest, path)
        files.append(datastore.NewFile(path.name, size, md5, "text", f"neb://any/{prefix}{path.name}", kind))
    return files


async def _exp_name(ctx: AgentContext, stage_name: str, run: Row) -> str | None:
    if stage_name == "diff":
        row = await ctx.db.fetch_one(Q.dist_diff_exp_name, id=run["id"])
        return str(row["exp_name"]) if row else None
    return None if run["name"] is None else str(run["name"])


async def _bundles(
    ctx: AgentContext, storage: Storage, dist: DistRun, staging: Path
) -> list[tuple[str, str | None, bundles.Built]]:
    """Build every component's bundle in ``staging``; (file name, component, result)."""
    stage_name, run_id = dist.stage, dist.stage_id
    comps = {c.component: c for c in await runs.components(ctx.db, stage_name, run_id)}
    files = [f for f in await runs.run_files(ctx.db, stage_name, run_id) if f.exists and not f.gone]
    if dist.clean:  # a cleaned run ships what cleanup keeps
        dropped = {r.name for r in rules_for(stage_name) if r.deleted_for("cleaned")}
        files = [f for f in files if f.rule not in dropped]
    paths = await storage.paths_many([f.key for f in files])
    grouped: dict[str | None, list[bundles.Member]] = defaultdict(list)
    for f in files:
        path = paths.get(parse_key(f.key).path)
        if path is None:
            raise ShipFailed(f"{f.key} is registered but no instance is readable (volume down?)")
        # files of no listed component (a chip run's mosaics, a camera run's per-chip streak
        # masks) travel in the run's own bundle
        owner = f.component if f.component in comps else None
        grouped[owner].append(bundles.Member(path, parse_key(f.key).path.rsplit("/", 1)[-1]))
    any_base = next((c.path_base for c in comps.values() if c.path_base), None)
    jobs = []
    for component, members in sorted(grouped.items(), key=lambda kv: str(kv[0])):
        base = comps[component].path_base if component in comps else any_base
        if not base:
            continue
        name = bundles.bundle_name(stage_name, base, component if component in comps else None)
        jobs.append((name, component, members))
    limit = asyncio.Semaphore(ctx.settings.dist_parallel)

    async def build(name: str, members: list[bundles.Member]) -> bundles.Built:
        async with limit:
            return await asyncio.to_thread(
                bundles.build, staging / name, members, level=ctx.settings.dist_gzip_level
            )

    built = await asyncio.gather(*(build(n, m) for n, _, m in jobs))
    return [(n, c, b) for (n, c, _), b in zip(jobs, built, strict=True)]


def _column_values(prod: Row, dist: DistRun, exp_name: str | None) -> list[Any]:
    known = {
        "target_id": dist.target_id,
        "stage": dist.stage,
        "stage_id": dist.stage_id,
        "exp_name": exp_name,
        "dist_id": dist.id,
        "label": dist.label,
        "clean": int(dist.clean),
    }  # as the row holds it
    return [known.get(label) for label in datastore.product_columns(prod)]


# -- its resources: the DataStore server -----------------------------------------------------


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    """Serve the DataStore for as long as the agent runs."""
    s = ctx.settings
    async with serving(
        dsserver.make_app(ctx.db, s.ds_token),
        s.ds_host,
        s.ds_port,
        ServerLimits.from_settings(s),
        ctx.log,
        "datastore",
    ):
        ctx.log.info(
            "ds_listening",
            url=f"http://{s.ds_host}:{s.ds_port}/ds/index.txt",
            token_required=bool(s.ds_token),
        )
        if s.ds_host not in ("127.0.0.1", "::1", "localhost") and not s.ds_token:
            ctx.log.warning(
                "ds_unprotected",
                host=s.ds_host,
                advice="serve other sites through a TLS proxy that authenticates, "
                "or set ds_token (docs/operations.md)",
            )
        yield


class ShipFailed(IppError):
    """The run cannot be shipped; the reason goes to distRun.note."""
