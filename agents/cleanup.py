"""Cleanup: delete what the file rules say for runs waiting in goto_cleaned, goto_purged or
goto_scrubbed, keeping what is needed to regenerate them (REFERENCE 1-2).

The story of one run: claim it (highest Label priority first, 10000 for a label without a
Label row, as the IPP's queries have it), choose its pending components (REFERENCE 1; every
component in a second pass, a run labelled ``cleanup_second_pass_label``), check each one's
guards (config dump present for a clean, absent for a scrub, NULL path_base skipped), delete
the files its target deletes (every instance, destreak recovery copies too; a chip's cmf and
b1 only by a clean whose camera run is full with a valid smf, never by a scrub), gzip its logs,
record its new data_state, then set the run to the target state (or error_<target> with the
reasons in its note) and write the run's own cleanup log, gzipped. A component that cannot be
cleaned never stops the others; a run that fails never stops the other runs. What each stage
and target deletes is tabled in docs/lifecycles.md against the IPP's ``ipp_cleanup.pl``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isal import igzip

from shared.core.errors import ClaimLost, ObjectExists, StorageError
from shared.db.database import Row
from shared.db.queries import Q
from shared.formats import catalogs
from shared.processing.filerules import (
    COMPRESSED_SUFFIX,
    compressed_rules,
    config_rule,
    deleted_by,
    rule,
    rules_for,
)
from shared.processing.runclaims import CLEANUP_SPECS, ClaimedRun
from shared.processing.runs import Component, components, other_owners, path_base_owners
from shared.processing.stages import CLEANUP_TARGETS, stage, stage_query
from shared.runtime.agent import AgentContext
from shared.storage.keys import parse_key
from shared.storage.store import Storage

NAME = "cleanup"


#: Warp skyfiles of this quality keep their files unless every component is taken (as
#: ipp_cleanup.pl does, without saying why: "what is special about quality == 8007?").
WARP_KEEP_QUALITY = 8007
#: Stages whose clean goes ahead without a config dump when the dump is gone (lost volume) or
#: the component is bad (fault or quality set); camera and stack runs never do (ipp_cleanup.pl).
FORGIVING_STAGES = ("chip", "warp", "diff")


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """Clean pending runs, highest Label priority first; returns how many were handled."""
    if ctx.args.dry_run:
        return await dry_run(ctx)
    handled = 0
    for pending in await ctx.db.fetch_all(Q.cleanup_pending_labels):
        handled += await _clean_label(ctx, pending["stage"], pending["label"])
        if not ctx.keep_going():
            break
    return handled


async def _clean_label(ctx: AgentContext, stage_name: str, label: str) -> int:
    """Claim and clean the label's runs of a stage in batches, two batches at a time (one's
    database work overlaps the other's file work), cleanup_parallel_runs runs in all."""
    spec = CLEANUP_SPECS[stage_name]
    lanes = 2 if ctx.settings.cleanup_parallel_runs >= 2 else 1
    size = -(-ctx.settings.cleanup_parallel_runs // lanes)
    handled = 0
    async with asyncio.TaskGroup() as group:
        running: set[asyncio.Task[None]] = set()
        while ctx.keep_going():
            if len(running) >= lanes:
                _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            rows = await ctx.claimer.claim(spec, limit=size, label=label)
            if not rows:
                break
            running.add(
                group.create_task(
                    clean_batch(ctx, stage_name, rows), name=f"clean-{stage_name}-{rows[0]['id']}"
                )
            )
            handled += len(rows)
    return handled


async def dry_run(ctx: AgentContext) -> int:
    """Print what each pending run would lose, claiming and changing nothing."""
    storage = Storage(ctx.db)
    for pending in await ctx.db.fetch_all(Q.cleanup_pending_labels):
        spec_query = stage_query("runs_by_label", pending["stage"])
        for run_row in await ctx.db.fetch_all(spec_query, label=pending["label"]):
            if run_row["state"] not in CLEANUP_TARGETS:
                continue
            run = await ctx.db.fetch_one(stage_query("runs_get", pending["stage"]), id=run_row["id"])
            assert run is not None
            full_run = ClaimedRun.from_row({**run, "note": None})
            plan = await plan_run(storage, pending["stage"], full_run, every=second_pass(ctx, full_run))
            print(f"{pending['stage']} {full_run.id} {full_run.state} -> {plan.target}")
            for comp in plan.components:
                if comp.problem:
                    print(f"  {comp.name or '-'}: would NOT clean: {comp.problem}")
                    continue
                for key in comp.deletes:
                    print(f"  {comp.name or '-'}: would delete {key}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be deleted for every pending run; change nothing",
    )
    parser.add_argument(
        "--all-components",
        action="store_true",
        help="second pass for every run: take every component, not only the "
        "pending ones (runs labelled cleanup_second_pass_label always are)",
    )


# -- planning ------------------------------------------------------------------------------


@dataclass
class ComponentPlan:
    name: str | None
    path_base: str | None
    deletes: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    problem: str | None = None
    note: str | None = None


@dataclass
class RunPlan:
    stage: str
    run: ClaimedRun
    goal: str
    target: str
    components: list[ComponentPlan]


def _selected(comp: Component, goal: str, target: str, per_file_state: bool, every: bool) -> bool:
    """REFERENCE 1: which components a cleanup pass takes."""
    if not per_file_state or every:
        return True
    if goal == "goto_cleaned":
        return comp.data_state in ("full", "update", "error_cleaned") and int(comp.quality) == 0
    return bool(comp.data_state != target)


async def _destreak_copies(
    storage: Storage, stage_name: str, run_id: int
) -> tuple[dict[str | None, str], dict[str | None, str]]:
    """Per component, where its destreak left the recovery of what it removed, and (a file
    censored in place) the uncensored backup. A run without components (camera) has its
    one, 'exposure', under the component None."""
    recovery: dict[str | None, str] = {}
    backup: dict[str | None, str] = {}
    own = stage(stage_name).component_key is None
    for r in await storage.db.fetch_all(Q.cleanup_destreak_copies, stage=stage_name, id=run_id):
        name = None if own and r["component"] == "exposure" else str(r["component"])
        if r["recovery_path_base"]:
            recovery[name] = str(r["recovery_path_base"])
        if r["backup_path_base"]:
            backup[name] = str(r["backup_path_base"])
    return recovery, backup


async def _good_smf(storage: Storage, chip_id: int) -> tuple[bool, str]:
    """Whether the chip run's camera run is full and its smf opens as a valid smf."""
    for cam in await storage.db.fetch_all(Q.cleanup_camera_of_chip, id=chip_id):
        if cam["state"] != "full" or not cam["path_base"]:
            continue
        key = rule("camera", "PSASTRO.OUTPUT").filename(cam["path_base"])
        try:
            path = await storage.locate(key)
            await asyncio.to_thread(catalogs.read_smf, path)
        except (StorageError, catalogs.CatalogError) as exc:
            return False, f"smf of camRun {cam['cam_id']} unusable ({exc})"
        return True, f"smf of camRun {cam['cam_id']} is valid"
    return False, "no full camera run with an smf"


def _guard(stage_name: str, goal: str, comp: Component, config: Row | None) -> tuple[str | None, str | None]:
    """(problem, note) from the config-dump guards of REFERENCE 2 and ipp_cleanup.pl: a chip
    of bad quality is cleaned or scrubbed without looking at its dump."""
    present = config is not None and int(config["up"] or 0) > 0
    gone = (
        config is not None
        and int(config["instances"] or 0) > 0
        and int(config["lost"] or 0) == int(config["instances"])
    )
    bad = bool(comp.fault) or bool(comp.quality)
    if stage_name == "chip" and comp.quality:
        return None, None
    if goal == "goto_cleaned" and not present:
        if stage_name in FORGIVING_STAGES and gone:
            return None, "config dump gone (lost volume): cleaned anyway"
        if stage_name in FORGIVING_STAGES and bad:
            return None, "config dump missing, component already bad: cleaned anyway"
        if config is not None and not gone:
            return "config dump is on a volume that is down: not cleaned now", None
        return "config dump missing: it could not be regenerated, so it was not cleaned", None
    if goal == "goto_scrubbed" and config is not None and not gone:
        return "config dump exists: use goto_cleaned, not goto_scrubbed", None
    return None, None


def second_pass(ctx: AgentContext, run: ClaimedRun) -> bool:
    """Whether the run is cleaned in a second pass (every component, REFERENCE 1)."""
    return bool(ctx.args.all_components) or (
        run.label is not None and run.label == ctx.settings.cleanup_second_pass_label
    )


async def plan_run(storage: Storage, stage_name: str, run: ClaimedRun, *, every: bool) -> RunPlan:
    st = stage(stage_name)
    goal = run.state
    target = CLEANUP_TARGETS[goal]
    comps = [
        c
        for c in await components(storage.db, stage_name, run.id)
        if _selected(c, goal, target, st.per_file_state, every)
    ]
    good_smf, smf_note = True, ""
    if stage_name == "chip" and goal == "goto_cleaned":
        good_smf, smf_note = await _good_smf(storage, run.id)
    recovery, backup = await _destreak_copies(storage, stage_name, run.id)
    cfg = config_rule(stage_name)
    config_keys = [cfg.filename(c.path_base, c.component) for c in comps if c.path_base]
    known = await storage.stat_many(config_keys)
    rules = deleted_by(stage_name, target, good_smf=good_smf)
    censored = [r for r in rules_for(stage_name) if r.censored and r not in rules]
    logs = compressed_rules(stage_name)
    owners = await path_base_owners(storage.db, [c.path_base for c in comps if c.path_base])
    inputs = (
        int(await storage.db.fetch_val(Q.runs_stack_inputs, id=run.id) or 0)
        if any(r.per_input for r in rules)
        else 0
    )
    plans = []
    for comp in comps:
        name, base = comp.component, comp.path_base
        plan = ComponentPlan(name, base)
        if not base:
            plan.note = "no path_base: nothing to delete"
            plans.append(plan)
            continue
        config = known.get(parse_key(cfg.filename(base, name)).path)
        plan.problem, plan.note = _guard(stage_name, goal, comp, config)
        shared = other_owners(owners, base, stage_name, run.id)
        if shared:
            plan.problem = (
                f"path_base {base} is also used by {', '.join(shared)}: its files "
                "are not deleted (storage shared between runs)"
            )
        if stage_name == "chip" and not good_smf and goal == "goto_cleaned":
            plan.note = f"cmf and b1 kept: {smf_note}"
        plan.logs = [r.filename(base, name) for r in logs]
        if stage_name == "warp" and comp.quality == WARP_KEEP_QUALITY and not every:
            plan.note = f"quality {WARP_KEEP_QUALITY}: files kept (as ipp_cleanup.pl does)"
            plans.append(plan)
            continue
        for r in rules:
            if r.per_input:  # one file per input of the run (a stack's kernels)
                plan.deletes += [r.filename(base, name, index=i) for i in range(inputs)]
                continue
            plan.deletes.append(r.filename(base, name))
            if r.recovery and name in recovery:
                plan.deletes.append(r.filename(recovery[name], name))
        for r in censored:  # kept itself; its two destreak copies go
            plan.deletes += [
                r.filename(copies[name], name) for copies in (recovery, backup) if name in copies
            ]
        plans.append(plan)
    return RunPlan(stage_name, run, goal, target, plans)


# -- doing: a batch of claimed runs -------------------------------------------------------
#
# The runs of one claim are cleaned together, step by step (delete, compress logs, record,
# write the cleanup logs, finish), so that each step is one storage call and one transaction
# for the batch rather than one per run. A step that fails on storage is done again run by
# run, so only the run at fault fails; every step can be redone (a file already deleted
# counts as gone, compressed copies made already are kept).


@dataclass
class RunWork:
    """A claimed run on its way through the batch."""

    run: ClaimedRun
    plan: RunPlan
    lines: list[str]
    problems: list[str] = field(default_factory=list)
    ready: list[ComponentPlan] = field(default_factory=list)
    done: list[ComponentPlan] = field(default_factory=list)
    failed: bool = False

    def fail(self, exc: Exception) -> None:
        """The run stops here: nothing more is done to it but recording the error."""
        self.problems.append(f"run: {exc}")
        self.lines.append(f"FAILED: {exc}")
        self.done = []
        self.failed = True

    def label(self, comp: ComponentPlan) -> str:
        return comp.name or self.plan.stage


async def _start(storage: Storage, stage_name: str, run: ClaimedRun, every: bool) -> RunWork:
    """Plan the run and log its notes and refusals; a storage or smf error fails it."""
    target = CLEANUP_TARGETS[run.state]
    lines = [f"cleanup of {stage(stage_name).run_table} {run.id}: {run.state}"]
    work = RunWork(run, RunPlan(stage_name, run, run.state, target, []), lines)
    try:
        work.plan = await plan_run(storage, stage_name, run, every=every)
    except (StorageError, catalogs.CatalogError) as exc:
        work.fail(exc)
        return work
    for comp in work.plan.components:
        if comp.note:
            lines.append(f"{work.label(comp)}: {comp.note}")
        if comp.problem:
            lines.append(f"{work.label(comp)}: NOT CLEANED: {comp.problem}")
            work.problems.append(f"{work.label(comp)}: {comp.problem}")
        else:
            work.ready.append(comp)
    return work


Step = Callable[[list[RunWork]], Awaitable[None]]


async def _together(works: list[RunWork], step: Step) -> None:
    """Do ``step`` for the runs still going, all at once; if storage fails it, again for
    each run alone, failing only the runs it fails for."""
    live = [w for w in works if not w.failed]
    if not live:
        return
    try:
        await step(live)
        return
    except (StorageError, catalogs.CatalogError) as exc:
        if len(live) == 1:
            live[0].fail(exc)
            return
    for work in live:
        try:
            await step([work])
        except (StorageError, catalogs.CatalogError) as exc:
            work.fail(exc)


def _delete_files(ctx: AgentContext, storage: Storage) -> Step:
    async def step(works: list[RunWork]) -> None:
        owner = {parse_key(k).path: (w, c) for w in works for c in w.ready for k in c.deletes}
        report = await storage.delete_many([k for w in works for c in w.ready for k in c.deletes])
        reasons: dict[tuple[int, str | None], str] = {}
        for key in report.unavailable:
            work, comp = owner[parse_key(key).path]
            reasons.setdefault((id(work), comp.name), "a storage volume is down")
        for key, why in report.refused.items():
            work, comp = owner[parse_key(key).path]
            reasons[(id(work), comp.name)] = why
        for work in works:
            for name in sorted({c.name for c in work.ready if (id(work), c.name) in reasons}, key=str):
                label, why = name or work.plan.stage, reasons[(id(work), name)]
                work.lines.append(f"{label}: NOT CLEANED: {why}")
                work.problems.append(f"{label}: {why}")
            work.done = [c for c in work.ready if (id(work), c.name) not in reasons]
        for key in report.deleted:
            work, comp = owner[parse_key(key).path]
            work.lines.append(f"{work.label(comp)}: deleted {key}")
        for key in report.missing:
            owner[parse_key(key).path][0].lines.append(f"already gone {key}")
        ctx.count("files_deleted", len(report.deleted))
        ctx.count("bytes_freed", report.bytes_freed)

    return step


def _gzip_files(paths: list[Path], level: int) -> list[bytes]:
    """The gzip copies of some files, read and compressed one at a time (ISA-L)."""
    return [igzip.compress(path.read_bytes(), level) for path in paths]


async def _gzip_many(paths: list[Path], level: int, lanes: int = 2) -> list[bytes]:
    """The gzip copies of ``paths``, in order, compressed in ``lanes`` threads (ISA-L lets
    go of the GIL while it compresses, so two lanes use two cores)."""
    share = -(-len(paths) // lanes) or 1
    parts = await asyncio.gather(
        *(asyncio.to_thread(_gzip_files, paths[i : i + share], level) for i in range(0, len(paths), share))
    )
    return [data for part in parts for data in part]


def _compress_logs(storage: Storage, level: int) -> Step:
    """Replace the logs of the cleaned components by gzip copies (``<key>.gz``, readable
    with zcat and zless)."""

    async def step(works: list[RunWork]) -> None:
        owner = {parse_key(k).path: w for w in works for c in w.done for k in c.logs}
        paths = await storage.paths_many([k for w in works for c in w.done for k in c.logs])
        todo = [k for w in works for c in w.done for k in c.logs if parse_key(k).path in paths]
        if not todo:
            return
        data = await _gzip_many([paths[parse_key(k).path] for k in todo], level)
        packed = [(f"{k}{COMPRESSED_SUFFIX}", d) for k, d in zip(todo, data, strict=True)]
        try:
            await storage.create_many(packed)
        except ObjectExists:  # a redo: some copies exist already
            made = await storage.stat_many([key for key, _ in packed])
            await storage.create_many(
                [(key, data) for key, data in packed if parse_key(key).path not in made]
            )
        report = await storage.delete_many(todo)
        for key in report.deleted:
            owner[parse_key(key).path].lines.append(f"compressed {key}")

    return step


async def _record_components(ctx: AgentContext, works: list[RunWork]) -> None:
    """The new data_state of the cleaned components of each run."""
    for work in works:
        if stage(work.plan.stage).per_file_state and work.done:
            await ctx.db.execute(
                stage_query("cleanup_components_state", work.plan.stage),
                id=work.run.id,
                state=work.plan.target,
                components=tuple(str(c.name) for c in work.done),
            )
        ctx.count("components_cleaned", len(work.done))


def _run_log_base(plan: RunPlan) -> str:
    """``<run base>`` of the cleanup's own log, from the components' path_base (REFERENCE 2),
    else from the run's workdir."""
    first = next((c for c in plan.components if c.path_base), None)
    if first is not None and first.path_base:
        base = first.path_base
        if first.name and base.endswith(f".{first.name}"):
            base = base[: -len(first.name) - 1]
        return base
    return f"{plan.run.workdir or 'neb:///cleanup'}/{plan.stage}.{plan.run.id}"


async def _write_run_logs(storage: Storage, works: list[RunWork], level: int, log: Any) -> None:
    """Each run's cleanup log at ``<run base>.cleanup.log.gz``, all in one batch; a run
    cleaned before already has one, so its log (and only then) goes one by one to
    ``<run base>.cleanup.<n>.log.gz``."""
    texts = [("\n".join(w.lines) + "\n").encode() for w in works]
    data = await asyncio.to_thread(lambda: [igzip.compress(t, level) for t in texts])
    try:
        await storage.create_many(
            [(f"{_run_log_base(w.plan)}{RUN_LOG}", d) for w, d in zip(works, data, strict=True)]
        )
        return
    except (ObjectExists, StorageError) as exc:
        log.debug("cleanup_logs_one_by_one", runs=len(works), reason=str(exc))
    for work, packed in zip(works, data, strict=True):
        try:
            await _write_run_log(storage, _run_log_base(work.plan), packed)
        except StorageError as exc:
            log.warning("cleanup_log_not_written", stage=work.plan.stage, run_id=work.run.id, error=str(exc))


#: The name of a run's cleanup log after its run base; later ones are ``.cleanup.<n>.log.gz``.
RUN_LOG = ".cleanup.log" + COMPRESSED_SUFFIX


async def _write_run_log(storage: Storage, base: str, data: bytes) -> str:
    for attempt in range(1, 100):
        key = f"{base}{RUN_LOG}" if attempt == 1 else f"{base}.cleanup.{attempt}.log{COMPRESSED_SUFFIX}"
        try:
            await storage.create(key, data)
            return key
        except ObjectExists:
            continue
    raise StorageError(f"{base}: too many cleanup logs")


async def _finish(ctx: AgentContext, work: RunWork) -> None:
    """Set the run to its target state, or error_<target> with the reasons in its note."""
    run, plan = work.run, work.plan
    log = ctx.log.bind(stage=plan.stage, run_id=run.id, goal=run.state)
    state = f"error_{plan.target}" if work.problems else plan.target
    note = (
        ctx.text.fit(stage(plan.stage).run_table, "note", "; ".join(work.problems))
        if work.problems
        else run.note
    )
    try:
        await ctx.claimer.finish(
            CLEANUP_SPECS[plan.stage],
            stage_query("cleanup_finish", plan.stage),
            run.id,
            state=state,
            unmagic=not work.problems,
            note=note,
            goal=run.state,
        )
    except ClaimLost as exc:
        log.warning(
            "cleanup_claim_lost",
            error=str(exc),
            action="the run changed state or was released; it will be picked up again",
        )
        ctx.item_failed(str(exc))
        return
    if work.problems:
        log.error("cleanup_failed", state=state, reasons=work.problems)
        ctx.item_failed(note or state)
    else:
        log.info("cleanup_done", state=state, components=len(plan.components))
        ctx.item_done()


async def clean_batch(ctx: AgentContext, stage_name: str, rows: list[Row]) -> None:
    """Clean claimed runs of one stage together and record each one's outcome; only
    database errors escape (then every claim not finished is handed back)."""
    storage = Storage(ctx.db)
    runs = [ClaimedRun.from_row(row) for row in rows]
    ctx.begin_item(f"{stage_name} {', '.join(str(r.id) for r in runs)}")
    try:
        async with asyncio.TaskGroup() as group:
            planned = [
                group.create_task(
                    _start(storage, stage_name, run, second_pass(ctx, run)), name=f"plan-{run.id}"
                )
                for run in runs
            ]
        works = [task.result() for task in planned]
        # A run is finished once started (the batch is ours); pause and stop are honoured
        # between batches.
        await _together(works, _delete_files(ctx, storage))
        await _together(works, _compress_logs(storage, ctx.settings.cleanup_log_gzip_level))
        await _record_components(ctx, works)
        for work in works:
            work.lines.append(
                "result: " + (f"error_{work.plan.target}" if work.problems else work.plan.target)
            )
        await _write_run_logs(storage, works, ctx.settings.cleanup_log_gzip_level, ctx.log)
        for work in works:
            await _finish(ctx, work)
    except BaseException:
        spec = CLEANUP_SPECS[stage_name]
        for run in runs:
            if (spec, run.id) in ctx.claimer.held.items():
                await ctx.claimer.release(spec, run.id)
        raise
