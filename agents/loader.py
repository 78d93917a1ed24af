"""Loader: build PSPS batches from the items a loading config has queued.

The story of one pass, per config (``--config NAME`` or ``all`` active ones): reserve a stripe
of the sky nobody else holds (or, if all are held, work in the busiest one beside its owner);
claim its items one at a time, box by box, each in its own short transaction so no two
loaders ever build the same batch; for each item reserve a batch number, build the batch
(P2: an exposure's smf with DVO ids; ST: a stack cmf; OB: a DVO region), check it, write the
FITS file and manifest, and publish them as a fileset of the config's DataStore product with
the batch recorded processed and loaded_to_datastore and the item done (one transaction, or
resumable steps when the ippToPsps database is separate: shared.psps.publish). The loader's
tables are in the ippToPsps database; what it reads of the processing database (camRun,
stackRun, storage) it reads on read-only sessions there.
A batch that fails is recorded failed with the reason; the item is retried by a later queue
pass, up to its attempts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from shared.core.errors import ClaimLost, IppError
from shared.db.database import Row, Tx
from shared.db.queries import Q
from shared.db.schema import IPPTOPSPS
from shared.formats import catalogs
from shared.processing.filerules import rule
from shared.psps import batches, builders, configs, publish
from shared.psps.batches import BatchError
from shared.psps.claims import FIRST_P2_SPEC, ITEM_SPEC, STRIPE_SPEC, PspsItem
from shared.psps.configs import LoadingConfig, for_each
from shared.psps.dvocache import DvoCache
from shared.runtime.agent import AgentContext, ItemEvents
from shared.storage.store import Storage

NAME = "loader"
#: Started with --config NAME or --config all, never without (shared.runtime.agent.AgentSpec).
PER_CONFIG = True
#: Registers and keeps its tables in the ippToPsps database (shared.db.roles).
DATABASE = IPPTOPSPS
EVENTS = ItemEvents(claim_lost="batch_claim_lost", failed="batch_failed")


# -- the agent -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("init",),
        help="init: make, publish and record the config's IN batch, then stop (seed 003)",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help="test mode (seed 003): the first queued exposure only, OTA 33 only, missing "
        "values ignored and listed in the log; then stop",
    )


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    """``init`` and ``--test`` need one config that exists: said at start-up, before any work."""
    for wanted, form in ((getattr(ctx.args, "action", None) == "init", "init"), (_testing(ctx), "--test")):
        if wanted:
            if ctx.config in ("", "all"):
                raise BatchError(f"loader {form} needs one config: ipp-agent loader --config NAME {form}")
            await configs.load(ctx.db, ctx.config)
    yield


def _testing(ctx: AgentContext) -> bool:
    return bool(getattr(ctx.args, "test", False))


async def run_once(ctx: AgentContext) -> int:
    if getattr(ctx.args, "action", None) == "init":
        await init(ctx)
        return 0
    if _testing(ctx):
        await test_one(ctx, await configs.load(ctx.db, ctx.config))
        return 0
    return await for_each(ctx.db, ctx.config, lambda cfg: load_config(ctx, cfg))


async def init(ctx: AgentContext) -> None:
    """``loader --config C init``, as ``loader.py C init`` was: the IN batch, then stop."""
    cfg = await configs.load(ctx.db, ctx.config)
    try:
        made = await publish.in_batch(ctx.dbs, cfg, Path(ctx.settings.var_dir))
    except (IppError, OSError) as exc:
        ctx.log.error("batch_failed", config=cfg.name, type="IN", reason=str(exc))
        ctx.item_failed(f"IN batch: {exc}")
        ctx.finish("init: the IN batch could not be made", exit_code=1)
        return
    if made.already:
        ctx.log.info("in_batch_exists", config=cfg.name, batch=made.name)
    else:
        ctx.log.info("batch_published", config=cfg.name, batch=made.name, type="IN", fileset=made.fileset)
        ctx.count("batches_published")
    ctx.finish("init: the IN batch is made")


async def load_config(ctx: AgentContext, cfg: LoadingConfig) -> int:
    """Work one stripe of a config; returns how many items were handled."""
    types = tuple(t for t in str(cfg.batch_types).split(",") if t != "IN") or ("--",)
    stripes = await ctx.claimer.claim(STRIPE_SPEC, limit=1, config=cfg.name)
    stripe: Row | None = (
        stripes[0] if stripes else await ctx.db.fetch_one(Q.psps_stripe_busiest, config=cfg.name)
    )
    if stripe is None:
        return 0
    handled = 0
    box: int | None = None
    try:
        async for (item,) in ctx.claimed(
            ITEM_SPEC, limit=1, config=cfg.name, stripe=stripe["stripe"], types=types
        ):
            claimed = PspsItem.from_row(item)
            if claimed.box != box and claimed.type in ("P2", "ST") and cfg.dvo_location:
                box = claimed.box
                try:
                    await enter_box(ctx, cfg, stripe, box)
                except IppError as exc:  # a DVO file gone or bad: the batches say so, one each
                    ctx.log.warning("dvo_box_failed", config=cfg.name, box=box, error=str(exc))
            await load_item(ctx, cfg, claimed)
            handled += 1
    finally:
        if stripes:
            await ctx.claimer.release(STRIPE_SPEC, stripe["id"])
    return handled


#: How far (degrees) an exposure's chips reach from its centre (GPC1's field of view): the
#: regions a box's exposures may touch lie within this of the box.
FOOTPRINT_DEG = 1.6


async def enter_box(ctx: AgentContext, cfg: LoadingConfig, stripe: Row, box: int) -> None:
    """Tell the DVO cache the loader is in a new box (seed 003: keep the regions both boxes
    overlap, drop the rest, choose how to read them from the smfs queued and the files' sizes)."""
    cache = _dvo(ctx, cfg.dvo_location)
    d0 = cfg.min_dec + box * float(cfg.box_size_deg)
    regions = await asyncio.to_thread(
        cache.overlapping_box,
        float(stripe["ra_min"]) - FOOTPRINT_DEG,
        float(stripe["ra_max"]) + FOOTPRINT_DEG,
        d0 - FOOTPRINT_DEG,
        d0 + float(cfg.box_size_deg) + FOOTPRINT_DEG,
    )
    smfs = int(
        await ctx.db.fetch_val(Q.psps_box_smfs, config=cfg.name, stripe=stripe["stripe"], box=box) or 0
    )
    plan = await asyncio.to_thread(cache.enter_box, regions, smfs + 1)  # + the one just claimed
    ctx.log.info(
        "dvo_box",
        config=cfg.name,
        stripe=stripe["stripe"],
        box=box,
        mode=plan.mode,
        regions=plan.regions,
        dvo_bytes=plan.dvo_bytes,
        smfs=plan.smfs,
        bytes_per_smf=plan.bytes_per_smf,
        kept=plan.kept,
        dropped=plan.dropped,
        cached_bytes=cache.cached_bytes,
    )


async def test_one(ctx: AgentContext, cfg: LoadingConfig) -> None:
    """``--test`` (seed 003's test mode): the config's first queued exposure, OTA 33 only,
    missing values tolerated, built and checked into ``var/psps/<config>/test/``, then stop.

    A trial must not use up real work: the batch is never published (the config's product is
    production's; PSPS never sees it), no batch is recorded, and the item stays queued, as it
    was, for the real loading."""
    cfg = dataclasses.replace(cfg, test_mode=True)
    rows = await ctx.claimer.claim(FIRST_P2_SPEC, limit=1, config=cfg.name)
    if not rows:
        ctx.log.info("nothing_queued", config=cfg.name, type="P2")
        ctx.finish("--test: nothing queued")
        return
    item = PspsItem.from_row(rows[0])
    try:
        result = builders.discard_duplicates(await build_p2(ctx, cfg, item.item_id), "P2")
        directory = Path(ctx.settings.var_dir) / "psps" / cfg.name / "test"
        name = f"test_P2_{item.item_id}"
        written = await asyncio.to_thread(batches.write, directory, name, "P2", cfg.name, result.tables)
    except (IppError, OSError) as exc:
        ctx.log.error("test_batch_failed", config=cfg.name, item=item.item_id, reason=str(exc))
        ctx.finish("--test: the first queued exposure could not be built", exit_code=1)
        return
    finally:
        await ctx.claimer.release(FIRST_P2_SPEC, item.id)
    ctx.log.info(
        "test_batch_built",
        config=cfg.name,
        item=item.item_id,
        fits=str(written.fits_path),
        detections=result.detections,
        ignored=result.notes or None,
    )
    ctx.finish("--test: the first queued exposure was built, not published; it stays queued")


async def load_item(ctx: AgentContext, cfg: LoadingConfig, item: PspsItem) -> None:
    """Build, check and publish the batch of one claimed item; record why if it fails."""
    name_cfg, kind, item_id = cfg.name, item.type, item.item_id
    if item.batch_id and await _resumed(ctx, cfg, item, item.batch_id):
        return
    batch_id, name = await publish.new_batch(ctx.db, name_cfg, kind, item_id)
    await ctx.db.execute(Q.psps_item_batch, id=item.id, owner=ctx.client_id, batch_id=batch_id)
    log = ctx.log.bind(config=name_cfg, batch=name, type=kind, item=item_id)

    async def failed(reason: str) -> None:
        note = ctx.text.fit("psps_batch", "note", reason)
        await ctx.db.execute(Q.psps_batch_failed, batch_id=batch_id, note=note)
        await ctx.claimer.finish(
            ITEM_SPEC,
            Q.psps_item_finish,
            item.id,
            state="failed",
            attempt=1,
            note=ctx.text.fit("psps_item", "note", reason),
        )

    async with ctx.working_on(f"{name_cfg} {kind} {item_id} {name}", EVENTS, failed, log=log):
        try:
            await _build_and_publish(ctx, cfg, item, batch_id, name, log)
        except ClaimLost as exc:  # this loader looked dead: the item is someone else's now
            await ctx.db.execute(
                Q.psps_batch_failed,
                batch_id=batch_id,
                note=ctx.text.fit("psps_batch", "note", f"dropped: {exc}"),
            )
            raise


async def _resumed(ctx: AgentContext, cfg: LoadingConfig, item: PspsItem, batch_id: int) -> bool:
    """An earlier attempt at the item died: its batch is completed if its fileset made it to
    the DataStore, else abandoned (shared.psps.publish.resume)."""
    done = await publish.resume(ctx.dbs, cfg, batch_id, lambda tx: _item_done(ctx, tx, item, None))
    if done is not None:
        ctx.log.info("batch_publish_resumed", config=cfg.name, batch=done, type=item.type, item=item.item_id)
        ctx.count("batches_published")
    return done is not None


async def _item_done(ctx: AgentContext, tx: Tx, item: PspsItem, note: str | None) -> None:
    await ctx.claimer.finish_in(
        tx, ITEM_SPEC, Q.psps_item_finish, item.id, state="done", attempt=1, note=note
    )


async def _build_and_publish(
    ctx: AgentContext, cfg: LoadingConfig, item: PspsItem, batch_id: int, name: str, log: Any
) -> None:
    kind, item_id = item.type, item.item_id
    result = builders.discard_duplicates(await build(ctx, cfg, kind, item_id, batch_id), kind)
    directory = Path(ctx.settings.var_dir) / "psps" / cfg.name
    written = await asyncio.to_thread(batches.write, directory, name, kind, cfg.name, result.tables)

    pub = await publish.stage(
        ctx.dbs.processing, cfg, batch_id, name, kind, written, result.detections, result.duplicates
    )
    note = ctx.text.fit("psps_item", "note", "; ".join(result.notes)) or None
    await publish.commit(ctx.dbs, pub, lambda tx: _item_done(ctx, tx, item, note))
    log.info(
        "batch_published",
        detections=result.detections,
        fileset=pub.fileset,
        fits=str(written.fits_path),
        missing=result.missing or None,
        duplicates=result.duplicates,
        ignored=result.notes if cfg.test_mode and result.notes else None,
    )
    ctx.count("batches_published")
    ctx.count("detections", result.detections)


async def build(
    ctx: AgentContext, cfg: LoadingConfig, kind: str, item_id: int, batch_id: int
) -> builders.P2Result:
    """The tables of one item's batch."""
    if kind == "P2":
        return await build_p2(ctx, cfg, item_id)
    if kind == "ST":
        return await build_st(ctx, cfg, item_id, batch_id)
    if kind == "OB":
        return await build_ob(ctx, cfg, item_id, batch_id)
    raise BatchError(f"{kind} items are not built by loaders (IN: ippctl psps init)")


async def build_p2(ctx: AgentContext, cfg: LoadingConfig, cam_id: int) -> builders.P2Result:
    frame = await ctx.dbs.reads.fetch_one(Q.psps_p2_frame, cam_id=cam_id)
    if frame is None or not frame["path_base"]:
        raise BatchError(f"camRun {cam_id}: no camera products recorded")
    key = rule("camera", "PSASTRO.OUTPUT").filename(frame["path_base"])
    storage = Storage(ctx.dbs.reads)
    info = await storage.stat(key)
    path = await storage.locate(key)
    try:
        _, chips = await asyncio.to_thread(catalogs.read_smf, path)
    except catalogs.CatalogError as exc:
        raise BatchError(f"camRun {cam_id}: {exc}") from None
    return await asyncio.to_thread(
        builders.p2_batch,
        frame,
        chips,
        _dvo(ctx, cfg.dvo_location),
        survey_id=int(cfg.survey_id),
        smf_md5=info.md5sum,
        test_mode=bool(cfg.test_mode),
    )


async def build_st(ctx: AgentContext, cfg: LoadingConfig, stack_id: int, batch_id: int) -> builders.P2Result:
    stack = await ctx.dbs.reads.fetch_one(Q.psps_st_stack, stack_id=stack_id)
    if stack is None or not stack["path_base"]:
        raise BatchError(f"stackRun {stack_id}: no stack products recorded")
    key = rule("stack", "PPSTACK.SOURCES").filename(stack["path_base"])
    path = await Storage(ctx.dbs.reads).locate(key)
    try:
        header, table = await asyncio.to_thread(catalogs.read_cmf, path)
    except catalogs.CatalogError as exc:
        raise BatchError(f"stackRun {stack_id}: {exc}") from None
    warps = [int(r["warp_id"]) for r in await ctx.dbs.reads.fetch_all(Q.psps_st_inputs, stack_id=stack_id)]
    return await asyncio.to_thread(
        builders.st_batch,
        stack,
        header,
        table,
        warps,
        _dvo(ctx, cfg.dvo_location),
        batch_id=batch_id,
        survey_id=int(cfg.survey_id),
    )


async def build_ob(
    ctx: AgentContext, cfg: LoadingConfig, region_index: int, batch_id: int
) -> builders.P2Result:
    cache = _dvo(ctx, cfg.dvo_location)
    region = next((r for r in cache.regions() if r.index == region_index), None)
    if region is None:
        raise BatchError(f"DVO region {region_index} is not in SkyTable.fits with catalog files")
    objects, averages = await asyncio.to_thread(lambda: (cache.db.objects(region), cache.db.averages(region)))
    return builders.ob_batch(region_index, objects, averages, batch_id=batch_id, survey_id=int(cfg.survey_id))


def _dvo(ctx: AgentContext, location: str) -> DvoCache:
    """One DVO cache per catalog directory for the agent's life (files re-read on change)."""
    caches: dict[str, DvoCache] = ctx.resources.setdefault("dvo", {})
    if location not in caches:
        caches[location] = DvoCache(Path(location), ctx.settings.dvo_cache_max_bytes)
    return caches[location]
