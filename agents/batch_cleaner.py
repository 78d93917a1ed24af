"""Batch cleaner: delete a batch's copies once PSPS no longer needs them.

The story of one pass, per config: take the batches PSPS has reached a verdict on (merge_worthy,
merged or failed) or that an operator purged, and delete the copies the config's deletion
policy names for that verdict (default: merge_worthy or failed -> the DataStore copy and the
DXLayer's copy; merged -> the local copy; purged -> every copy). Each deletion is recorded as
it happens (deleted_datastore / deleted_dxlayer / deleted_local succeeded, with the time); a
copy that is already gone counts as deleted; a deletion that fails (ODM down, a volume down)
is recorded failed with the reason, logged with the batch name, and tried again after
``batch_retry_s``. A batch whose verdict is final and whose copies are all handled is not
looked at again (until the policy changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from shared.core.errors import IppError
from shared.db.queries import Q
from shared.db.schema import IPPTOPSPS
from shared.distribution import datastore
from shared.psps import odm
from shared.psps.configs import (
    DELETION_TARGETS,
    CleanerBatch,
    LoadingConfig,
    for_each,
    parse_policy,
)
from shared.runtime.agent import AgentContext

NAME = "batch_cleaner"
#: Started with --config NAME or --config all, never without (shared.runtime.agent.AgentSpec).
PER_CONFIG = True
#: Registers and keeps its tables in the ippToPsps database (shared.db.roles).
DATABASE = IPPTOPSPS
PER_PASS = 500


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    return await for_each(ctx.db, ctx.config, lambda cfg: clean_config(ctx, cfg))


async def clean_config(ctx: AgentContext, cfg: LoadingConfig) -> int:
    policy = parse_policy(cfg.deletion_policy)
    batches = await ctx.db.fetch_all(Q.cleaner_batches, config=cfg.name, limit=PER_PASS)
    done = 0
    for batch in map(CleanerBatch.from_row, batches):
        if not ctx.keep_going():
            break
        ctx.begin_item(f"{cfg.name} {batch.name}")
        done += await clean_batch(ctx, cfg, batch, policy)
        ctx.item_done()
    return done


async def clean_batch(
    ctx: AgentContext, cfg: LoadingConfig, batch: CleanerBatch, policy: dict[str, tuple[str, ...]]
) -> int:
    """Delete what is due for one batch; returns the deletions recorded as succeeded."""
    todo = wanted(batch, policy)
    done, failed = 0, False
    log = ctx.log.bind(batch=batch.name, config=cfg.name, type=batch.type)
    for target in DELETION_TARGETS:
        if target not in todo:
            continue
        if not due(ctx, batch, target):
            failed = failed or batch.deleted[target] != "succeeded"
            continue
        try:
            note = await DELETERS[target](ctx, cfg, batch)
        except DeleteFailed as exc:
            failed = True
            await ctx.db.execute(
                Q.batch_deleted,
                batch_id=batch.batch_id,
                target=target,
                state="failed",
                note=ctx.text.fit("psps_batch", "note", f"delete {target}: {exc}"),
            )
            log.warning(
                "batch_delete_failed", target=target, reason=str(exc), retry_in_s=ctx.settings.batch_retry_s
            )
            ctx.count(f"delete_{target}_failed")
            continue
        await ctx.db.execute(
            Q.batch_deleted, batch_id=batch.batch_id, target=target, state="succeeded", note=None
        )
        log.info("batch_copy_deleted", target=target, note=note)
        ctx.count(f"deleted_{target}")
        done += 1
    if final(batch) and not failed:
        await ctx.db.execute(Q.batch_cleaned, batch_id=batch.batch_id)
    return done


def due(ctx: AgentContext, batch: CleanerBatch, target: str) -> bool:
    """Not deleted yet, and not a failure too recent to try again."""
    state = batch.deleted[target]
    if state == "succeeded":
        return False
    age = batch.age_s[target]
    return state == "pending" or age is None or age >= ctx.settings.batch_retry_s


class DeleteFailed(IppError):
    """A copy that could not be deleted now."""


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    async with odm.session(ctx.settings.odm_timeout_s) as http:
        ctx.resources["http"] = http
        yield


def verdicts(batch: CleanerBatch) -> list[str]:
    """The policy states a batch has reached."""
    found = []
    if batch.merge_worthy == "succeeded":
        found.append("merge_worthy")
    if batch.merged == "succeeded":
        found.append("merged")
    if "failed" in (batch.processed, batch.loaded_to_odm, batch.merge_worthy, batch.merged):
        found.append("failed")
    return found


def wanted(batch: CleanerBatch, policy: dict[str, tuple[str, ...]]) -> set[str]:
    """The copies to delete: every one for a purged batch, else what the policy says."""
    if batch.purged:
        return set(DELETION_TARGETS)
    return {t for v in verdicts(batch) for t in policy.get(v, ())}


def final(batch: CleanerBatch) -> bool:
    """PSPS will say nothing more about this batch."""
    return batch.purged or batch.merged == "succeeded" or "failed" in verdicts(batch)


# -- the three copies ----------------------------------------------------------------------


async def delete_datastore(ctx: AgentContext, cfg: LoadingConfig, batch: CleanerBatch) -> str | None:
    if not batch.fileset:
        return "never published on the DataStore"
    try:
        deleted = await datastore.remove_fileset(ctx.dbs.processing, cfg.datastore_product, batch.fileset)
    except datastore.NotFound:
        return f"product {cfg.datastore_product} is gone"
    except datastore.DataStoreError as exc:
        raise DeleteFailed(str(exc)) from None
    return "already gone from the DataStore" if deleted is None else None


async def delete_dxlayer(ctx: AgentContext, cfg: LoadingConfig, batch: CleanerBatch) -> str | None:
    try:
        had = await odm.delete_dxlayer_copy(
            ctx.resources["http"], ctx.settings.odm_base_url(), batch.name, ctx.settings.odm_token
        )
    except odm.OdmError as exc:
        raise DeleteFailed(str(exc)) from None
    return None if had else "the DXLayer had no copy"


def _local_files(ctx: AgentContext, batch: CleanerBatch) -> list[Path]:
    if not batch.fits_path:
        return []
    fits_path = Path(batch.fits_path)
    root = (Path(ctx.settings.var_dir) / "psps").resolve()
    if not fits_path.resolve().is_relative_to(root):
        raise DeleteFailed(f"{fits_path} is outside {root}: not deleting it")
    return [fits_path, fits_path.with_name(f"{batch.name}.manifest.json")]


async def delete_local(ctx: AgentContext, cfg: LoadingConfig, batch: CleanerBatch) -> str | None:
    files = _local_files(ctx, batch)
    gone = 0
    for path in files:
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            gone += 1
        except OSError as exc:
            raise DeleteFailed(f"{path}: {exc.strerror}") from None
    return "already gone" if files and gone == len(files) else None


DELETERS = {"datastore": delete_datastore, "dxlayer": delete_dxlayer, "local": delete_local}
