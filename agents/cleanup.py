"""Cleanup: delete what the file rules say for runs waiting in goto_cleaned, goto_purged or
goto_scrubbed, keeping what is needed to regenerate them (REFERENCE 1-2).

The story of one run: claim it (highest Label priority first), choose its pending components
(REFERENCE 1), check each one's guards (config dump present for a clean, absent for a scrub,
NULL path_base skipped), delete the files its target deletes (every instance, destreak
recovery copies too; a chip's cmf and b1 only when its camera run is full with a valid smf),
compress its logs, record its new data_state, then set the run to the target state (or
error_<target> with the reasons in its note) and write the run's own cleanup log. A component
that cannot be cleaned never stops the others; a run that fails never stops the other runs.
"""

from __future__ import annotations

import argparse
import asyncio
import bz2
from dataclasses import dataclass, field
from typing import Any

from shared import catalogs
from shared.db import Row
from shared.errors import ClaimLost, ObjectExists, StorageError
from shared.filerules import config_rule, deleted_by, rule, rules_for
from shared.queries import Q
from shared.runclaims import CLEANUP_SPECS
from shared.runs import components
from shared.runtime.agent import AgentContext
from shared.stages import CLEANUP_TARGETS, stage
from shared.storage import Storage, parse_key

NAME = "cleanup"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be deleted for every pending run; change nothing")
    parser.add_argument("--all-components", action="store_true",
                        help="second pass: take every component, not only the pending ones")


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
    run: Row
    goal: str
    target: str
    components: list[ComponentPlan]


def _selected(comp: Row, goal: str, target: str, per_file_state: bool, every: bool) -> bool:
    """REFERENCE 1: which components a cleanup pass takes."""
    if not per_file_state or every:
        return True
    if goal == "goto_cleaned":
        return comp["data_state"] in ("full", "update", "error_cleaned") and int(comp["quality"]) == 0
    return bool(comp["data_state"] != target)


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


def _guard(goal: str, comp: Row, config: Row | None) -> tuple[str | None, str | None]:
    """(problem, note) from the config-dump guards of REFERENCE 2."""
    present = config is not None and int(config["up"] or 0) > 0
    gone = (config is not None and int(config["instances"] or 0) > 0
            and int(config["lost"] or 0) == int(config["instances"]))
    bad = bool(comp["fault"]) or bool(comp["quality"])
    if goal == "goto_cleaned" and not present:
        if gone:
            return None, "config dump gone (lost volume): cleaned anyway"
        if bad:
            return None, "config dump missing, component already bad: cleaned anyway"
        if config is not None:
            return "config dump is on a volume that is down: not cleaned now", None
        return "config dump missing: it could not be regenerated, so it was not cleaned", None
    if goal == "goto_scrubbed" and config is not None and not gone:
        return "config dump exists: use goto_cleaned, not goto_scrubbed", None
    return None, None


async def plan_run(storage: Storage, stage_name: str, run: Row, *, every: bool) -> RunPlan:
    st = stage(stage_name)
    goal = run["state"]
    target = CLEANUP_TARGETS[goal]
    comps = [c for c in await components(storage.db, stage_name, run["id"])
             if _selected(c, goal, target, st.per_file_state, every)]
    good_smf, smf_note = True, ""
    if stage_name == "chip" and goal == "goto_cleaned":
        good_smf, smf_note = await _good_smf(storage, run["id"])
    recovery = {r["component"]: r["recovery_path_base"] for r in await storage.db.fetch_all(
        Q.cleanup_recovery_paths, stage=stage_name, id=run["id"])}
    cfg = config_rule(stage_name)
    config_keys = [cfg.filename(c["path_base"], c["component"]) for c in comps if c["path_base"]]
    known = await storage.stat_many(config_keys)
    rules = deleted_by(stage_name, target, good_smf=good_smf)
    logs = [r for r in rules_for(stage_name) if r.file_class == "log"]
    plans = []
    for comp in comps:
        name, base = comp["component"], comp["path_base"]
        plan = ComponentPlan(name, base)
        if not base:
            plan.note = "no path_base: nothing to delete"
            plans.append(plan)
            continue
        config = known.get(parse_key(cfg.filename(base, name)).path)
        plan.problem, plan.note = _guard(goal, comp, config)
        if stage_name == "chip" and not good_smf and goal == "goto_cleaned":
            plan.note = f"cmf and b1 kept: {smf_note}"
        for r in rules:
            plan.deletes.append(r.filename(base, name))
            if r.recovery and name in recovery:
                plan.deletes.append(r.filename(recovery[name], name))
        plan.logs = [r.filename(base, name) for r in logs]
        plans.append(plan)
    return RunPlan(stage_name, run, goal, target, plans)


# -- doing ---------------------------------------------------------------------------------


async def _compress_logs(storage: Storage, keys: list[str], lines: list[str]) -> None:
    """Replace logs by bzip2 copies (``<key>.bz2``) in batches; idempotent (a redo finds
    some copies made already and makes only the others)."""
    paths = await storage.paths_many(keys)
    todo = [k for k in keys if parse_key(k).path in paths]
    if not todo:
        return
    packed = await asyncio.to_thread(
        lambda: [(f"{k}.bz2", bz2.compress(paths[parse_key(k).path].read_bytes(), 9))
                 for k in todo])
    try:
        await storage.create_many(packed)
    except ObjectExists:  # a redo: some copies exist already
        made = await storage.stat_many([key for key, _ in packed])
        await storage.create_many([(key, data) for key, data in packed
                                   if parse_key(key).path not in made])
    report = await storage.delete_many(todo)
    lines += [f"compressed {k}" for k in report.deleted]


async def _write_run_log(storage: Storage, plan: RunPlan, lines: list[str]) -> str:
    """The cleanup's own log, at ``<run base>.cleanup.log.bz2`` (REFERENCE 2)."""
    first = next((c for c in plan.components if c.path_base), None)
    if first is not None and first.path_base:
        base = first.path_base
        if first.name and base.endswith(f".{first.name}"):
            base = base[: -len(first.name) - 1]
    else:
        base = f"{plan.run['workdir'] or 'neb:///cleanup'}/{plan.stage}.{plan.run['id']}"
    data = await asyncio.to_thread(bz2.compress, ("\n".join(lines) + "\n").encode(), 9)
    for attempt in range(1, 100):
        key = f"{base}.cleanup.log.bz2" if attempt == 1 else f"{base}.cleanup.{attempt}.log.bz2"
        try:
            await storage.create(key, data)
            return key
        except ObjectExists:
            continue
    raise StorageError(f"{base}: too many cleanup logs")


async def clean_components(ctx: AgentContext, storage: Storage, plan: RunPlan,
                           lines: list[str]) -> list[str]:
    """Delete the files of every component of the run in batches; returns the problems."""
    problems = []
    ready = []
    for comp in plan.components:
        label = comp.name or plan.stage
        if comp.note:
            lines.append(f"{label}: {comp.note}")
        if comp.problem:
            lines.append(f"{label}: NOT CLEANED: {comp.problem}")
            problems.append(f"{label}: {comp.problem}")
        else:
            ready.append(comp)
    owner = {parse_key(k).path: c.name for c in ready for k in c.deletes}
    report = await storage.delete_many([k for c in ready for k in c.deletes])
    blocked = {owner[parse_key(k).path] for k in report.unavailable}
    for name in sorted(blocked, key=str):
        label = name or plan.stage
        lines.append(f"{label}: NOT CLEANED: a storage volume is down")
        problems.append(f"{label}: a storage volume is down")
    lines += [f"{owner[parse_key(k).path] or plan.stage}: deleted {k}" for k in report.deleted]
    lines += [f"already gone {k}" for k in report.missing]
    done = [c for c in ready if c.name not in blocked]
    await _compress_logs(storage, [k for c in done for k in c.logs], lines)
    if stage(plan.stage).per_file_state and done:
        await ctx.db.execute(getattr(Q, f"cleanup_components_state_{plan.stage}"),
                             id=plan.run["id"], state=plan.target,
                             components=tuple(str(c.name) for c in done))
    ctx.count("files_deleted", len(report.deleted))
    ctx.count("bytes_freed", report.bytes_freed)
    ctx.count("components_cleaned", len(done))
    return problems


async def clean_run(ctx: AgentContext, stage_name: str, run: Row) -> None:
    """Clean one claimed run and record the outcome; only database errors escape."""
    storage = Storage(ctx.db)
    ctx.begin_item(f"{stage_name} {run['id']} {run['state']}")
    log = ctx.log.bind(stage=stage_name, run_id=run["id"], goal=run["state"])
    lines = [f"cleanup of {stage(stage_name).run_table} {run['id']}: {run['state']}"]
    target = CLEANUP_TARGETS[run["state"]]
    problems: list[str] = []
    plan = RunPlan(stage_name, run, run["state"], target, [])
    try:
        plan = await plan_run(storage, stage_name, run, every=ctx.args.all_components)
        # A run is finished once started (it is one batch, and the claim is ours); pause and
        # stop are honoured between runs.
        problems = await clean_components(ctx, storage, plan, lines)
    except (StorageError, catalogs.CatalogError) as exc:
        problems.append(f"run: {exc}")
        lines.append(f"FAILED: {exc}")
    state = f"error_{target}" if problems else target
    note = "; ".join(problems)[:255] if problems else run["note"]
    lines.append(f"result: {state}")
    try:
        await _write_run_log(storage, plan, lines)
    except StorageError as exc:
        log.warning("cleanup_log_not_written", error=str(exc))
    try:
        await ctx.claimer.finish(CLEANUP_SPECS[stage_name],
                                 getattr(Q, f"cleanup_finish_{stage_name}"), run["id"],
                                 state=state, unmagic=not problems, note=note, goal=run["state"])
    except ClaimLost as exc:
        log.warning("cleanup_claim_lost", error=str(exc),
                    action="the run changed state or was released; it will be picked up again")
        ctx.item_failed(str(exc))
        return
    if problems:
        log.error("cleanup_failed", state=state, reasons=problems)
        ctx.item_failed(note or state)
    else:
        log.info("cleanup_done", state=state, components=len(plan.components))
        ctx.item_done()


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """Clean pending runs, highest Label priority first; returns how many were handled."""
    if ctx.args.dry_run:
        return await dry_run(ctx)
    handled = 0
    for pending in await ctx.db.fetch_all(Q.cleanup_pending_labels):
        spec = CLEANUP_SPECS[pending["stage"]]
        while ctx.keep_going():
            rows = await ctx.claimer.claim(spec, limit=ctx.settings.cleanup_parallel_runs,
                                           label=pending["label"])
            if not rows:
                break
            await _clean_together(ctx, pending["stage"], rows)
            handled += len(rows)
        if not ctx.keep_going():
            break
    return handled


async def _clean_together(ctx: AgentContext, stage_name: str, rows: list[Row]) -> None:
    """Clean the claimed runs concurrently; if one fails on a database error, the others
    are cancelled and every claim not finished is handed back before the error goes on."""
    spec = CLEANUP_SPECS[stage_name]
    try:
        async with asyncio.TaskGroup() as group:
            for row in rows:
                group.create_task(clean_run(ctx, stage_name, row), name=f"clean-{row['id']}")
    except BaseException:
        for row in rows:
            if (spec, row["id"]) in ctx.claimer.held.items():
                await ctx.claimer.release(spec, row["id"])
        raise


async def dry_run(ctx: AgentContext) -> int:
    """Print what each pending run would lose, claiming and changing nothing."""
    storage = Storage(ctx.db)
    for pending in await ctx.db.fetch_all(Q.cleanup_pending_labels):
        spec_query = getattr(Q, f"runs_by_label_{pending['stage']}")
        for run_row in await ctx.db.fetch_all(spec_query, label=pending["label"]):
            if run_row["state"] not in CLEANUP_TARGETS:
                continue
            run = await ctx.db.fetch_one(getattr(Q, f"runs_get_{pending['stage']}"),
                                         id=run_row["id"])
            assert run is not None
            full_run: dict[str, Any] = {**run, "note": None}
            plan = await plan_run(storage, pending["stage"], full_run,
                                  every=ctx.args.all_components)
            print(f"{pending['stage']} {run['id']} {run['state']} -> {plan.target}")
            for comp in plan.components:
                if comp.problem:
                    print(f"  {comp.name or '-'}: would NOT clean: {comp.problem}")
                    continue
                for key in comp.deletes:
                    print(f"  {comp.name or '-'}: would delete {key}")
    return 0
