"""Update: regenerate what cleanup removed from runs in ``update`` (REFERENCE 1 and 3).

The story of one run: claim it; find which files of its components are missing (a chip's cmf
is never re-created; a warp's sources, skycell template and psf are always made again). If
nothing is missing it is simply full again. Otherwise its input runs must be full with
magicked >= 0; inputs that are not are asked to update too (a diff asks for its warps and
stack, a warp for its chip and camera runs, a stack for its warps) and the run waits with its
claim handed back. Then a job naming every input file and wanted output is written, the
stage's processor (the reference processor unless the site configured its own) runs within
a deadline, the outputs are moved into storage, and one transaction sets the components and
the run full, restoring magicked from the streak run. A reason that may pass (a volume down,
inputs not ready) makes the run wait and come back; any other marks it failed, with the
reason in its note, until someone asks for the update again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core.errors import IppError, ObjectExists, StorageError
from shared.db.database import Row, Tx
from shared.db.queries import Q
from shared.processing.filerules import config_rule, regenerated_rules, rule, rules_for
from shared.processing.runclaims import UPDATE_SPECS, ClaimedRun
from shared.processing.runs import Component, components, request_update
from shared.processing.stages import StageError, stage, stage_query
from shared.runtime.agent import AgentContext, ItemEvents
from shared.runtime.process import CommandFailed, run_command
from shared.runtime.scratch import remove_stale, scratch_dir
from shared.storage.keys import parse_key
from shared.storage.store import Storage

NAME = "update"
EVENTS = ItemEvents(claim_lost="update_claim_lost", failed="update_failed")
#: Stages in the order inputs come before what is made from them, so one pass can bring a
#: whole chain back once the first inputs are ready.
ORDER = ("chip", "camera", "warp", "stack", "diff")
#: Regenerated whenever a warp is updated, present or not (REFERENCE 3).
WARP_ALWAYS = ("PSWARP.OUTPUT.SOURCES", "SKYCELL.TEMPLATE", "PSPHOT.PSF.SKY.SAVE")
DESTREAK_RULES = ("PPIMAGE.CHIP", "PPIMAGE.CHIP.MASK", "PPIMAGE.CHIP.VARIANCE")
GONE_FAULT = 26
#: Input run states from which the update agent asks the input to update as well.
REQUESTABLE = ("cleaned", "scrubbed", "error_cleaned")
#: Input run states that will become requestable or full without us (wait for them).
PENDING = ("update", "goto_cleaned", "goto_purged", "goto_scrubbed", "new", "reg")


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """One pass over the runs in update, inputs' stages first, each run at most once; returns
    how many were finished or failed (runs that only wait do not count, so the runtime idles
    rather than spinning on them, and ``--once`` ends)."""
    stale = await asyncio.to_thread(remove_stale, ctx.settings.update_scratch())
    if stale:
        ctx.log.info(
            "update_scratch_removed",
            directories=[str(p) for p in stale],
            reason="left by an update agent that was killed",
        )
    handled = 0
    for stage_name in ORDER:
        after = 0  # runs are claimed in id order, each once a pass: the next after the last
        while ctx.keep_going():
            rows = await ctx.claimer.claim(UPDATE_SPECS[stage_name], limit=1, after=after)
            if not rows:
                break
            run = ClaimedRun.from_row(rows[0])
            after = run.id
            handled += await update_run(ctx, stage_name, run)
    return handled


class Waiting(IppError):
    """The run cannot be regenerated now, for a reason that may pass."""


class UpdateFailed(IppError):
    """The run cannot be regenerated until someone changes something."""


# -- the plan of one run -----------------------------------------------------------------


@dataclass
class Task:
    """One processor task: a component (or a chip run's focal-plane products)."""

    component: str | None
    kind: str = "component"
    dump: str | None = None
    dump_values: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    recovery: dict[str, str] = field(default_factory=dict)
    replace: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputRun:
    stage: str
    run_id: int
    state: str
    magicked: int


@dataclass
class Plan:
    stage: str
    run: ClaimedRun
    finished: list[str] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    inputs: list[InputRun] = field(default_factory=list)
    magic_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(len(t.outputs) + len(t.recovery) for t in self.tasks)


EXPOSURE_COLUMNS = ("exp_id", "exp_name", "filter", "dateobs", "exp_time", "airmass", "ra", "decl")


def _exposure(row: Row) -> dict[str, Any]:
    """The exposure as its rawExp row records it (the processor derives what it needs)."""
    out = {c: row[c] for c in EXPOSURE_COLUMNS}
    out["dateobs"] = row["dateobs"].isoformat()
    return out


def _sky_pixels(stage_name: str, prefix: str, path_base: str, e: dict[str, Any]) -> dict[str, Any]:
    """A sky-stage image set (image, mask, variance) and the exposure it was taken in."""
    return {
        "image": rule(stage_name, prefix).filename(path_base),
        "mask": rule(stage_name, f"{prefix}.MASK").filename(path_base),
        "variance": rule(stage_name, f"{prefix}.VARIANCE").filename(path_base),
        "exposure": e,
    }


class Planner:
    """Works out, for one claimed run, what is missing and what regenerating it reads."""

    def __init__(self, storage: Storage, stage_name: str, run: ClaimedRun) -> None:
        self.storage, self.db = storage, storage.db
        self.plan = Plan(stage_name, run)
        self.stage = stage_name

    async def build(self) -> Plan:
        comps = await components(self.db, self.stage, self.plan.run.id)
        chosen = []
        for c in comps:
            label = c.component or self.stage
            if int(c.fault or 0) == GONE_FAULT:
                self.plan.notes.append(f"{label}: fault {GONE_FAULT} (gone): never updated")
            elif int(c.quality or 0) != 0:
                self.plan.notes.append(f"{label}: quality {c.quality}: not updated")
            elif not c.path_base:
                self.plan.notes.append(f"{label}: no path_base: nothing to regenerate")
            else:
                chosen.append(c)
        self.plan.finished = [str(c.component) for c in chosen if c.component]
        stage_planner: Callable[[list[Component]], Awaitable[None]] = getattr(self, f"_{self.stage}")
        await stage_planner(chosen)
        return self.plan

    # -- what is missing ----------------------------------------------------------------

    async def _status(self, keys: list[str]) -> dict[str, str]:
        """'ok', 'absent', 'gone' (every instance lost) or 'down' for each key."""
        known = await self.storage.stat_many(keys)
        out = {}
        for key in keys:
            row = known.get(parse_key(key).path)
            if row is None:
                out[key] = "absent"
            elif int(row["instances"] or 0) > 0 and int(row["lost"] or 0) == int(row["instances"]):
                out[key] = "gone"
            elif int(row["up"] or 0) == 0:
                out[key] = "down"
            else:
                out[key] = "ok"
        return out

    async def _tasks(
        self, comps: list[Component], always: tuple[str, ...] = ()
    ) -> list[tuple[Component, Task]]:
        """A task per component with something missing (its dump chosen per REFERENCE 3)."""
        rules = regenerated_rules(self.stage)
        cfg = config_rule(self.stage)
        keys = [r.filename(c.path_base, c.component) for c in comps for r in [*rules, cfg]]
        status = await self._status(keys)
        out = []
        for c in comps:
            base, name = c.path_base, c.component
            task = Task(name)
            for r in rules:
                key = r.filename(base, name)
                if status[key] in ("absent", "gone") or r.name in always:
                    task.outputs[r.name] = key
                    if status[key] in ("gone", "ok"):
                        task.replace.append(key)
            dump_key = cfg.filename(base, name)
            if status[dump_key] == "ok":
                task.dump = dump_key
            elif status[dump_key] == "down":
                self.plan.notes.append(
                    f"{name or self.stage}: config dump on a volume that is "
                    "down: current recipes, no dump saved"
                )
            else:
                self.plan.notes.append(
                    f"{name or self.stage}: config dump {status[dump_key]}: current recipes, new dump saved"
                )
                task.outputs[cfg.name] = dump_key
                if status[dump_key] == "gone":
                    task.replace.append(dump_key)
            out.append((c, task))
        return out

    # -- per stage ----------------------------------------------------------------------

    async def _context(self, query: Any, comps: list[Component], problem: str) -> Row:
        """The run's context row (UpdateFailed naming ``problem`` if absent), with the streak
        run's magic_id taken for restoring magicked."""
        row = await self.db.fetch_one(query, id=self.plan.run.id)
        if row is None:
            raise UpdateFailed(f"{stage(self.stage).run_table} {self.plan.run.id}: {problem}")
        self._magic(row["magic_id"], comps)
        return row

    async def _chip(self, comps: list[Component]) -> None:
        run_id = self.plan.run.id
        ctx = await self._context(Q.update_chip_context, comps, "its rawExp row is missing")
        e = _exposure(ctx)
        raws = {r["class_id"]: r for r in await self.db.fetch_all(Q.update_chip_raws, exp_id=ctx["exp_id"])}
        recovery = {
            r["component"]: r["recovery_path_base"]
            for r in await self.db.fetch_all(Q.cleanup_destreak_copies, stage="chip", id=run_id)
            if r["recovery_path_base"]
        }
        cam_base = next(
            (
                c["path_base"]
                for c in await self.db.fetch_all(Q.cleanup_camera_of_chip, id=run_id)
                if c["path_base"]
            ),
            None,
        )
        rec_keys = {
            (c.component, n): rule("chip", n).filename(recovery[c.component], c.component)
            for c in comps
            if int(c.magicked or 0) != 0 and c.component in recovery
            for n in DESTREAK_RULES
        }
        rec_status = await self._status(list(rec_keys.values()))
        for c, task in await self._tasks(comps):
            name = str(c.component)
            for n in DESTREAK_RULES:
                key = rec_keys.get((name, n))
                if key and rec_status[key] in ("absent", "gone"):
                    task.recovery[n] = key
                    if rec_status[key] == "gone":
                        task.replace.append(key)
            if not task.outputs and not task.recovery:
                continue
            raw = raws.get(name)
            if raw is None or not raw["uri"]:
                raise UpdateFailed(f"chip {name}: no raw image recorded in rawImfile")
            streak = None
            if int(c.magicked or 0) != 0 and int(raw["magicked"] or 0) <= 0:
                if cam_base is None:
                    raise UpdateFailed(f"chip {name} was destreaked but no camera run holds its streak mask")
                streak = rule("camera", "PSASTRO.OUTPUT.MASK").filename(cam_base, name)
            task.dump_values = {"EXP_NAME": e["exp_name"], "CLASS_ID": name, "CHIP_ID": run_id}
            task.inputs = {
                "raw": raw["uri"],
                "exposure": e,
                "image_id": raw["image_id"],
                "chip_id": run_id,
                "class_id": name,
                "streak_mask": streak,
                "run_photometry": "PSPHOT.PSF.SAVE" in task.outputs,
            }
            self.plan.tasks.append(task)
        await self._chip_fpa(comps)

    async def _chip_fpa(self, comps: list[Component]) -> None:
        """The chip run's focal-plane mosaics and jpegs, made from every chip's binned images."""
        if not comps:
            return
        base = comps[0].path_base
        fpa = [r for r in rules_for("chip") if r.deleted_by and "{CHIP.NAME}" not in r.pattern]
        status = await self._status([r.filename(base) for r in fpa])
        missing = {r.name: r.filename(base) for r in fpa if status[r.filename(base)] in ("absent", "gone")}
        if not missing:
            return
        b1, b2 = rule("chip", "PPIMAGE.BIN1"), rule("chip", "PPIMAGE.BIN2")
        bins = {
            c.component: [
                b1.filename(c.path_base, c.component),
                b2.filename(c.path_base, c.component),
            ]
            for c in comps
        }
        self.plan.tasks.append(
            Task(
                None,
                kind="fpa",
                outputs=missing,
                inputs={"bins": bins},
                replace=[k for k in missing.values() if status[k] == "gone"],
            )
        )

    async def _camera(self, comps: list[Component]) -> None:
        """Cleanup keeps every camera product a cleaned run needs; nothing to regenerate."""
        await self._context(Q.update_camera_context, comps, "its chip run is missing")
        missing = [n for _c, task in await self._tasks(comps) for n in task.outputs]
        if missing:
            raise UpdateFailed(
                f"camRun {self.plan.run.id}: {', '.join(missing)} missing; "
                "camera products are not regenerated (re-run the camera stage)"
            )

    async def _warp(self, comps: list[Component]) -> None:
        run_id = self.plan.run.id
        ctx = await self._context(Q.update_warp_context, comps, "its camera, chip or exposure row is missing")
        e = _exposure(ctx)
        chips: dict[str, dict[str, list[str]]] = {}
        for m in await self.db.fetch_all(Q.update_warp_chips, id=run_id):
            chips.setdefault(m["skycell_id"], {})[m["class_id"]] = [
                rule("chip", n).filename(m["path_base"], m["class_id"]) for n in DESTREAK_RULES
            ]
        tasks = [(c, t) for c, t in await self._tasks(comps, WARP_ALWAYS) if t.outputs]
        if not tasks:
            return
        self.plan.inputs += [
            InputRun("chip", ctx["chip_id"], ctx["chip_state"], int(ctx["chip_magicked"])),
            InputRun("camera", ctx["cam_id"], ctx["cam_state"], int(ctx["cam_magicked"])),
        ]
        cells = await self._skycells([str(c.component) for c, _ in tasks])
        for c, task in tasks:
            name = str(c.component)
            task.dump_values = {"EXP_NAME": e["exp_name"], "SKYCELL_ID": name, "WARP_ID": run_id}
            task.inputs = {"skycell": cells[name], "exposure": e, "chips": chips.get(name, {})}
            self.plan.tasks.append(task)

    async def _stack(self, comps: list[Component]) -> None:
        run_id = self.plan.run.id
        ctx = await self._context(Q.update_stack_context, comps, "the run row is missing")
        tasks = [(c, t) for c, t in await self._tasks(comps) if t.outputs]
        if not tasks:
            return
        warps = await self.db.fetch_all(Q.update_stack_warps, id=run_id)
        self.plan.inputs += [InputRun("warp", w["warp_id"], w["state"], int(w["magicked"])) for w in warps]
        missing = [str(w["warp_id"]) for w in warps if not w["path_base"]]
        if missing:
            raise UpdateFailed(
                f"stackRun {run_id}: warps {', '.join(missing)} have no skyfile for {ctx['skycell_id']}"
            )
        cells = await self._skycells([ctx["skycell_id"]])
        filter_name = str(ctx["filter"]).split(".")[0]
        for _c, task in tasks:
            task.dump_values = {"SKYCELL_ID": ctx["skycell_id"], "STACK_ID": run_id, "FILTER": filter_name}
            task.inputs = {
                "skycell": cells[ctx["skycell_id"]],
                "filter": filter_name,
                "stack_id": run_id,
                "warps": [_sky_pixels("warp", "PSWARP.OUTPUT", w["path_base"], _exposure(w)) for w in warps],
            }
            self.plan.tasks.append(task)

    async def _diff(self, comps: list[Component]) -> None:
        run_id = self.plan.run.id
        await self._context(Q.update_diff_context, comps, "the run row is missing")
        tasks = [(c, t) for c, t in await self._tasks(comps) if t.outputs]
        if not tasks:
            return
        inputs = {i["skycell_id"]: i for i in await self.db.fetch_all(Q.update_diff_inputs, id=run_id)}
        cells = await self._skycells([str(c.component) for c, _ in tasks])
        for c, task in tasks:
            name = str(c.component)
            i = inputs.get(name)
            if i is None or not i["warp_path_base"] or not i["stack_path_base"]:
                raise UpdateFailed(f"diff {run_id} {name}: its input warp or stack skyfile is not recorded")
            self.plan.inputs += [
                InputRun("warp", i["warp_id"], i["warp_state"], int(i["warp_magicked"])),
                InputRun("stack", i["stack_id"], i["stack_state"], 0),
            ]
            e = _exposure(i)
            task.dump_values = {
                "SKYCELL_ID": name,
                "DIFF_ID": run_id,
                "WARP_ID": i["warp_id"],
                "STACK_ID": i["stack_id"],
            }
            task.inputs = {
                "skycell": cells[name],
                "warp": _sky_pixels("warp", "PSWARP.OUTPUT", i["warp_path_base"], e),
                "stack": _sky_pixels("stack", "PPSTACK.OUTPUT", i["stack_path_base"], e),
            }
            self.plan.tasks.append(task)

    # -- helpers ------------------------------------------------------------------------

    def _magic(self, magic_id: Any, comps: list[Component]) -> None:
        """The streak run whose magic_id a destreaked run (magicked -1) gets back."""
        cleaned = self.plan.run.magicked < 0 or any(int(c.magicked or 0) < 0 for c in comps)
        if cleaned and magic_id is None:
            raise UpdateFailed(
                "the run was destreaked (magicked -1) but no streak run "
                "(magicRun / magicDSRun) records its magic_id"
            )
        self.plan.magic_id = None if magic_id is None else int(magic_id)

    async def _skycells(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetch_all(Q.update_skycells, ids=tuple(sorted(set(ids))))
        cells = {r["skycell_id"]: dict(r) for r in rows}
        unknown = sorted(set(ids) - set(cells))
        if unknown:
            raise UpdateFailed(
                f"skycell geometry unknown for {', '.join(unknown)} (the skycell table has no row)"
            )
        return cells


# -- inputs --------------------------------------------------------------------------------


async def check_inputs(ctx: AgentContext, plan: Plan) -> None:
    """Raise Waiting (after asking unready inputs to update) unless every input run is full
    with magicked >= 0; UpdateFailed when an input can never become so."""
    waiting, seen = [], set()
    for i in plan.inputs:
        if (i.stage, i.run_id) in seen or (i.state == "full" and i.magicked >= 0):
            continue
        seen.add((i.stage, i.run_id))
        what = f"{i.stage} {i.run_id}"
        if i.state in REQUESTABLE:
            try:
                await request_update(ctx.db, i.stage, i.run_id)
            except StageError as exc:  # it changed state meanwhile: look again later
                waiting.append(f"{what} ({exc})")
                continue
            ctx.log.info(
                "update_input_requested",
                stage=plan.stage,
                run_id=plan.run.id,
                input_stage=i.stage,
                input_id=i.run_id,
                was=i.state,
            )
            waiting.append(f"{what} (update requested)")
        elif i.state in PENDING:
            waiting.append(f"{what} ({i.state})")
        elif i.state == "full":
            raise UpdateFailed(
                f"input {what} is full but magicked {i.magicked} (its streak mask was not restored)"
            )
        else:
            raise UpdateFailed(f"input {what} is {i.state}: it cannot be regenerated")
    if waiting:
        raise Waiting("waiting for inputs: " + ", ".join(waiting))


# -- regenerating --------------------------------------------------------------------------


def _resolve(value: Any, paths: dict[str, Path]) -> Any:
    """The job's inputs with every storage key replaced by a local path."""
    if isinstance(value, str) and value.startswith("neb://"):
        return str(paths[value])
    if isinstance(value, dict):
        return {k: _resolve(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, paths) for v in value]
    return value


def _keys(value: Any) -> list[str]:
    if isinstance(value, str) and value.startswith("neb://"):
        return [value]
    if isinstance(value, dict):
        return [k for v in value.values() for k in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


async def _input_paths(storage: Storage, plan: Plan, staged: dict[str, Path]) -> dict[str, Path]:
    """A local path for every input key: staged outputs of this job first, then storage."""
    wanted = sorted(
        {k for t in plan.tasks for k in _keys(t.inputs) + ([t.dump] if t.dump else []) if k not in staged}
    )
    paths = await storage.paths_many(wanted)
    known = await storage.stat_many(wanted)
    resolved: dict[str, Path] = dict(staged)
    for key in wanted:
        path = paths.get(parse_key(key).path)
        if path is not None:
            resolved[key] = path
        elif parse_key(key).path in known:
            raise Waiting(f"input {key} is on a volume that is down or lost")
        else:
            raise UpdateFailed(f"input {key} is missing from storage")
    return resolved


def _stage_paths(plan: Plan, scratch: Path) -> dict[str, Path]:
    """Where the processor writes each wanted file (by key)."""
    staged: dict[str, Path] = {}
    for t in plan.tasks:
        for key in [*t.outputs.values(), *t.recovery.values()]:
            staged[key] = scratch / "out" / f"{len(staged):05d}.{parse_key(key).path.rsplit('/', 1)[-1]}"
    return staged


async def regenerate(ctx: AgentContext, storage: Storage, plan: Plan) -> None:
    """Run the stage's processor on a job for every task, then store what it wrote."""
    async with scratch_dir(ctx.settings.update_scratch(), f"{plan.stage}.{plan.run.id}.") as scratch:
        staged = _stage_paths(plan, scratch)
        await asyncio.to_thread((scratch / "out").mkdir)
        paths = await _input_paths(storage, plan, {})
        paths.update(staged)
        job = {
            "stage": plan.stage,
            "tasks": [
                {
                    "component": t.component,
                    "kind": t.kind,
                    "dump": str(paths[t.dump]) if t.dump else None,
                    "dump_values": t.dump_values,
                    "outputs": {n: str(staged[k]) for n, k in t.outputs.items()},
                    "recovery": {n: str(staged[k]) for n, k in t.recovery.items()},
                    "inputs": _resolve(t.inputs, paths),
                }
                for t in plan.tasks
            ],
        }
        job_path = scratch / "job.json"
        await asyncio.to_thread(job_path.write_text, json.dumps(job, indent=1, default=str))
        argv = [*ctx.settings.update_command(plan.stage), str(job_path)]
        try:
            result = await run_command(
                argv, timeout_s=ctx.settings.update_timeout_s, log_path=scratch / "processor.log"
            )
        except CommandFailed as exc:
            raise UpdateFailed(f"processor: {exc}") from None
        ctx.log.debug(
            "update_processor_done",
            stage=plan.stage,
            run_id=plan.run.id,
            duration_s=round(result.duration_s, 3),
        )
        await _store(storage, plan, staged)


async def _store(storage: Storage, plan: Plan, staged: dict[str, Path]) -> None:
    """Move the processor's outputs into storage (replacing what must be made again)."""
    absent = [k for k, p in staged.items() if not p.exists()]
    if absent:
        raise UpdateFailed(
            f"processor wrote no {', '.join(absent[:3])}"
            + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        )
    replace = [k for t in plan.tasks for k in t.replace]
    if replace:
        report = await storage.delete_many(replace)
        if report.unavailable:
            raise Waiting(f"cannot replace {report.unavailable[0]}: its volume is down")
    try:
        await storage.create_many_by_moving(list(staged.items()))
    except ObjectExists:  # one was stored meanwhile (a race with another attempt)
        raise Waiting("some outputs were stored by someone else meanwhile; looking again") from None


# -- recording -----------------------------------------------------------------------------


async def finish(ctx: AgentContext, plan: Plan) -> None:
    """Components and run full in one transaction, magicked restored, wait row cleared."""
    stage_name, run_id = plan.stage, plan.run.id
    note = ctx.text.fit(stage(stage_name).run_table, "note", "; ".join(plan.notes)) or None

    async def record(tx: Tx) -> None:
        if stage(stage_name).per_file_state and plan.finished:
            await tx.execute(
                stage_query("update_components_full", stage_name),
                id=run_id,
                components=tuple(plan.finished),
                magic_id=plan.magic_id,
            )
        await ctx.claimer.finish_in(
            tx,
            UPDATE_SPECS[stage_name],
            stage_query("update_finish", stage_name),
            run_id,
            note=note,
            magic_id=plan.magic_id,
        )
        await tx.execute(Q.update_wait_clear, stage=stage_name, id=run_id)

    await ctx.db.transaction(record, name="update_finish")


async def postpone(ctx: AgentContext, stage_name: str, run: ClaimedRun, reason: str, *, failed: bool) -> None:
    """Hand the claim back with the reason in the run's note and a wait (or failed) row."""
    previous = await ctx.db.fetch_one(Q.update_wait_get, stage=stage_name, id=run.id)
    attempts = int(previous["attempts"]) if previous else 0
    delay_s = ctx.settings.update_wait_s * 2 ** min(attempts, 3)
    note = ctx.text.fit(
        stage(stage_name).run_table, "note", ("update failed: " if failed else "update waiting: ") + reason
    )

    async def record(tx: Tx) -> None:
        await tx.execute(
            Q.update_wait_set,
            stage=stage_name,
            id=run.id,
            delay_us=int(delay_s * 1e6),
            reason=ctx.text.fit("update_wait", "reason", reason),
            failed=int(failed),
        )
        await ctx.claimer.finish_in(
            tx, UPDATE_SPECS[stage_name], stage_query("update_release", stage_name), run.id, note=note
        )

    await ctx.db.transaction(record, name="update_postpone")


async def update_run(ctx: AgentContext, stage_name: str, run: ClaimedRun) -> bool:
    """Bring one claimed run back to full, or leave it waiting or failed with the reason;
    True unless it is only waiting (so a pass that only waited counts as idle)."""
    log = ctx.log.bind(stage=stage_name, run_id=run.id)
    waited = False

    async def failed(reason: str) -> None:
        await postpone(ctx, stage_name, run, reason, failed=True)

    async with ctx.working_on(
        f"{stage_name} {run.id} update", EVENTS, failed, failures=(UpdateFailed, StorageError), log=log
    ):
        try:
            await _update(ctx, stage_name, run, log)
        except Waiting as exc:  # an input is not there yet: not a failure
            await postpone(ctx, stage_name, run, str(exc), failed=False)
            log.info("update_waiting", reason=str(exc))
            waited = True
    return not waited


async def _update(ctx: AgentContext, stage_name: str, run: ClaimedRun, log: Any) -> None:
    storage = Storage(ctx.db)
    started = asyncio.get_running_loop().time()
    plan = await Planner(storage, stage_name, run).build()
    if plan.tasks:
        await check_inputs(ctx, plan)
        await regenerate(ctx, storage, plan)
    await finish(ctx, plan)
    ctx.count("runs_updated")
    ctx.count("files_regenerated", plan.files)
    log.info(
        "update_done",
        files=plan.files,
        components=len(plan.finished),
        duration_s=round(asyncio.get_running_loop().time() - started, 3),
        notes=plan.notes or None,
    )
