"""ODM poller: follow every published batch through PSPS until it is merged or failed.

The story of one pass, per config (``--config NAME`` or ``all`` active ones): take the
published batches PSPS has not finished with and that were not asked about recently
(``--type`` and ``--stage`` narrow them: unloaded, unmergeworthy, unmerged), ask the ODM for
each one's status (``odm_parallel`` at once), and record what it says, the pass's answers
written together (check times in one statement, moves in transactions of 100): loaded_to_odm,
merge_worthy and merged each move from pending to succeeded or failed once, with the time.
A failed batch keeps the ODM's reason in its note and its item goes back to the queue for a
new batch, until its attempts (``psps_max_attempts``) are used up; then the item stays failed
with the reason. A batch the ODM still does not know ``odm_unknown_timeout_s`` after it was
published is failed the same way. An ODM that is down, slow or answers nonsense changes
nothing: the batch is logged by name and asked again on a later pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.core.cli import positive_hours
from shared.db.database import Tx
from shared.db.queries import Q
from shared.db.schema import IPPTOPSPS
from shared.psps import BATCH_TYPES, odm
from shared.psps.claims import PolledBatch
from shared.psps.configs import LoadingConfig, for_each
from shared.runtime.agent import AgentContext

NAME = "odm_poller"
#: Started with --config NAME or --config all, never without (shared.runtime.agent.AgentSpec).
PER_CONFIG = True
#: Registers and keeps its tables in the ippToPsps database (shared.db.roles).
DATABASE = IPPTOPSPS
STAGES = ("unloaded", "unmergeworthy", "unmerged", "all")
#: Batches asked about in one pass of a config. A pass ends waiting for its slowest answer
#: and its last writes: with 500 a survey of 3000 batches waited six times (bench/tracking.py).
PER_PASS = 2000


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    return await for_each(ctx.db, ctx.config, lambda cfg: poll_config(ctx, cfg))


async def poll_config(ctx: AgentContext, cfg: LoadingConfig) -> int:
    kind = ctx.args.type
    types = tuple(t for t in BATCH_TYPES if kind in ("all", t))
    batches = await ctx.db.fetch_all(
        Q.odm_poll_batches,
        config=cfg.name,
        types=types,
        stage=ctx.args.stage,
        recheck_us=int(ctx.settings.poll_interval_s * 1e6),
        limit=PER_PASS,
    )
    if not batches:
        return 0
    ctx.begin_item(f"{cfg.name}: {len(batches)} batches")
    started = time.monotonic()
    answers: asyncio.Queue[Answer | None] = asyncio.Queue()
    # answers are written while later checks are still being asked (a chunk at a time)
    writer = asyncio.create_task(record_answers(ctx, answers), name="odm-record")
    try:
        errors = await ask_all(ctx, deque(PolledBatch.from_row(b) for b in batches), answers)
        await answers.put(None)
        moved = await writer
    finally:
        if not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    ctx.log.info(
        "odm_pass",
        config=cfg.name,
        checked=len(batches),
        moved=moved,
        errors=errors,
        duration_s=round(time.monotonic() - started, 3),
    )
    if errors:
        ctx.item_failed(
            f"{errors} of {len(batches)} status checks failed (ODM down, slow or answering nonsense)"
        )
    else:
        ctx.item_done()
    return moved


Answer = tuple[PolledBatch, "odm.OdmStatus | None"]


async def ask_all(ctx: AgentContext, todo: deque[PolledBatch], answers: asyncio.Queue[Answer | None]) -> int:
    """Ask the ODM about every batch, ``odm_parallel`` at once, queueing the answers for the
    writer; returns how many checks met an ODM error. (A few askers taking the next batch,
    not a task per batch waiting at a semaphore: a pass asks about thousands.)"""

    async def asker() -> int:
        errors = 0
        while todo:
            batch, status, error = await poll_batch(ctx, todo.popleft())
            if error:
                errors += 1
            else:
                await answers.put((batch, status))
        return errors

    askers = min(ctx.settings.odm_parallel, len(todo))
    return sum(await asyncio.gather(*(asker() for _ in range(askers))))


async def record_answers(ctx: AgentContext, answers: asyncio.Queue[Answer | None]) -> int:
    """Write the answers RECORD_CHUNK at a time as they come, the rest when None says the
    checks are over; returns how many batches moved on. (Writing whatever had arrived each
    time the queue ran dry made chunks of two or three answers, a transaction per few checks:
    the database, not the ODM, set the pace.)"""
    moved, done = 0, False
    while not done:
        chunk: list[Answer] = []
        while len(chunk) < RECORD_CHUNK:
            item = await answers.get()
            if item is None:
                done = True
                break
            chunk.append(item)
        if chunk:
            moved += await record_all(ctx, chunk)
    return moved


async def poll_batch(ctx: AgentContext, batch: PolledBatch) -> tuple[PolledBatch, odm.OdmStatus | None, bool]:
    """(the batch, what the ODM said or None if it does not know it yet, ODM error)."""
    try:
        status = await odm.batch_status(ctx.resources["http"], ctx.settings.odm_base_url(), batch.name)
    except odm.OdmError as exc:
        ctx.log.warning(
            "odm_answer_unusable",
            batch=batch.name,
            error=str(exc),
            action="asked again on a later pass",
        )
        return batch, None, True
    ctx.count("status_checks")
    return batch, status or unknown_too_long(ctx, batch), False


def unknown_too_long(ctx: AgentContext, batch: PolledBatch) -> odm.OdmStatus | None:
    """A batch the ODM should have known long ago counts as failed at load."""
    age = batch.published_s
    if age is not None and age > ctx.settings.odm_unknown_timeout_s:
        return odm.OdmStatus(
            "failed", "load", f"the ODM still does not know this batch {int(age)} s after it was published"
        )
    return None


#: Batches whose new states are written in one transaction (a pass's checks are written
#: together, not one commit per batch: the database, not the ODM, set the pace before).
RECORD_CHUNK = 100


async def record_all(ctx: AgentContext, answered: list[Answer]) -> int:
    """Write what the ODM said of some batches: those that did not move only get their
    check time (one statement), the others their new states (and a failed one's item
    requeued) in transactions of RECORD_CHUNK; returns how many moved on."""
    still = [b.batch_id for b, status in answered if status is None or not _moves(b, status)]
    if still:
        await ctx.db.execute(Q.odm_checked, ids=tuple(still))
    moving = [(b, status) for b, status in answered if status is not None and _moves(b, status)]
    for at in range(0, len(moving), RECORD_CHUNK):
        chunk = moving[at : at + RECORD_CHUNK]

        async def write(tx: Tx, chunk: list[tuple[PolledBatch, odm.OdmStatus]] = chunk) -> None:
            await _write_statuses(ctx, tx, chunk)

        await ctx.db.transaction(write, name="odm_record")
        for batch, status in chunk:
            _log_status(ctx, batch, status)
    return len(moving)


def _moves(batch: PolledBatch, status: odm.OdmStatus) -> bool:
    stages = status.stages()
    return any(batch.stage(c) != stages[c] for c in stages)


async def _write_statuses(
    ctx: AgentContext, tx: Tx, answers: list[tuple[PolledBatch, odm.OdmStatus]]
) -> None:
    """The batches' new states, one statement per distinct answer, and the items of failed
    ones requeued."""
    same: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for batch, status in answers:
        same[_record_params(status)].append(batch.batch_id)
    for key, ids in same.items():
        await tx.execute(Q.odm_record, ids=tuple(ids), **dict(zip(RECORD_KEYS, key, strict=True)))
    for batch, status in answers:
        if status.status == "failed":
            await tx.execute(
                Q.psps_item_requeue,
                config=batch.config,
                type=batch.type,
                item_id=batch.item_id,
                batch_id=batch.batch_id,
                max_attempts=ctx.settings.psps_max_attempts,
                note=ctx.text.fit(
                    "psps_item", "note", f"batch {batch.name} failed in PSPS: {_note(status)}", reserve=40
                ),
            )


RECORD_KEYS = ("status", "loaded", "worthy", "merged", "done", "note")


def _record_params(status: odm.OdmStatus) -> tuple[Any, ...]:
    """odm_record's parameters for an answer, in RECORD_KEYS order."""
    stages = status.stages()
    failed = status.status == "failed"
    done = int(failed or status.status == "merged")
    return (
        status.status,
        stages["loaded_to_odm"],
        stages["merge_worthy"],
        stages["merged"],
        done,
        _note(status),
    )


def _note(status: odm.OdmStatus) -> str | None:
    return f"PSPS {status.stage}: {status.reason}" if status.status == "failed" else None


def _log_status(ctx: AgentContext, batch: PolledBatch, status: odm.OdmStatus) -> None:
    where = {"batch": batch.name, "config": batch.config, "type": batch.type}
    if status.status == "failed":
        ctx.log.warning("batch_failed_in_psps", **where, stage=status.stage, reason=status.reason)
        ctx.count("batches_failed")
    else:
        ctx.log.info("batch_status", **where, status=status.status)
        ctx.count(f"batches_{status.status}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--type", default="all", choices=(*BATCH_TYPES, "all"), help="poll only batches of this type"
    )
    parser.add_argument(
        "--stage", default="all", choices=STAGES, help="poll only batches waiting for this stage"
    )
    parser.add_argument(
        "seed_form",
        nargs="*",
        metavar="CONFIG TYPE STAGE [HOURS]",
        action=SeedForm,
        help="pollOdm.py's own form (seed 003: pollOdm.py all all all 1), the same as "
        "--config CONFIG --type TYPE --stage STAGE [--every HOURS]",
    )


class SeedForm(argparse.Action):
    """``pollOdm.py <configPath> <P2|ST|OB|all> <unloaded|unmergeworthy|unmerged|all> [hours]``
    (seed 003), read into the flags it means; any other count is refused naming them."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        _opt: object = None,
    ) -> None:
        given = [str(v) for v in values] if isinstance(values, list) else []
        if not given:
            return
        if len(given) not in (3, 4):
            parser.error(
                f"pollOdm.py's form is CONFIG TYPE STAGE [HOURS] (--config, --type, --stage, "
                f"--every), got {len(given)} value(s): {' '.join(given)}"
            )
        config, kind, stage, *hours = given
        if namespace.config and namespace.config != config:
            parser.error(f"--config {namespace.config} and the positional config {config} disagree")
        for what, value, allowed in (("TYPE", kind, (*BATCH_TYPES, "all")), ("STAGE", stage, STAGES)):
            if value not in allowed:
                parser.error(f"pollOdm.py's {what} {value!r} is not one of {', '.join(allowed)}")
        namespace.config, namespace.type, namespace.stage = config, kind, stage
        if hours:
            try:
                namespace.every = positive_hours(hours[0])
            except argparse.ArgumentTypeError as exc:
                parser.error(f"pollOdm.py's HOURS: {exc}")


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    async with odm.session(ctx.settings.odm_timeout_s) as http:
        ctx.resources["http"] = http
        yield
