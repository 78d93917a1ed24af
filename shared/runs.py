"""Run tools: list runs, change their state as REFERENCE 1 allows, list their product files.

Used by ``ippctl runs`` and by the agents. Queries are picked by stage name from the named
queries in ``shared/sql/queries/runs.sql``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from shared.db import Database, Row, Tx
from shared.errors import StorageError
from shared.filerules import rules_for
from shared.queries import Q, Query
from shared.stages import ALLOWED_FROM, StageError, check_state, check_transition, stage
from shared.storage import Storage, _hash_file, parse_key


def _q(operation: str, stage_name: str) -> Query:
    return getattr(Q, f"{operation}_{stage(stage_name).name}")  # type: ignore[no-any-return]


async def list_runs(db: Database, stage_name: str, *, state: str | None = None,
                    label: str | None = None, limit: int = 1000) -> list[Row]:
    if state is not None:
        check_state(state)
    return await db.fetch_all(_q("runs_list", stage_name), state=state, label=label, limit=limit)


async def get_run(db: Database, stage_name: str, run_id: int) -> Row:
    row = await db.fetch_one(_q("runs_get", stage_name), id=run_id)
    if row is None:
        raise StageError(f"{stage(stage_name).run_table} {run_id} does not exist")
    return row


@dataclass(frozen=True)
class StateChange:
    run_id: int
    was: str
    now: str


async def set_state(db: Database, stage_name: str, target: str, *, run_id: int | None = None,
                    label: str | None = None) -> list[StateChange]:
    """Set runs (one by id, or every run with a label) to ``target``.

    Every run is checked against the transitions table first; if any is refused, nothing is
    changed and the error names each refused run. ``update`` also sets the run's cleaned
    components to ``update``. The UPDATE repeats the allowed-from condition, so a run that
    changed state meanwhile is reported, not overwritten.
    """
    check_state(target)
    st = stage(stage_name)
    if (run_id is None) == (label is None):
        raise StageError("give exactly one of --id or --label")
    if run_id is not None:
        runs = [await get_run(db, stage_name, run_id)]
    else:
        runs = await db.fetch_all(_q("runs_by_label", stage_name), label=label)
        if not runs:
            raise StageError(f"no {st.run_table} has label {label!r}")
    refusals = []
    for run in runs:
        try:
            check_transition(stage_name, run["id"], run["state"], target)
        except StageError as exc:
            refusals.append(str(exc))
    if refusals:
        raise StageError("; ".join(refusals) + " (nothing was changed)")
    allowed = tuple(sorted(ALLOWED_FROM[target]))

    async def apply(tx: Tx) -> list[StateChange]:
        changes = []
        for run in runs:
            changed = await tx.execute(_q("runs_set_state", stage_name), id=run["id"],
                                       state=target, allowed=allowed)
            if changed != 1:
                raise StageError(f"{st.run_table} {run['id']} changed state meanwhile; "
                                 "nothing was changed, try again")
            if target == "update" and st.per_file_state:
                await tx.execute(_q("runs_components_to_update", stage_name), id=run["id"])
            changes.append(StateChange(run["id"], run["state"], target))
        return changes

    return await db.transaction(apply, name="runs_set_state")


async def request_update(db: Database, stage_name: str, run_id: int) -> StateChange:
    """Ask for a run's pixels back: the run (and its cleaned components) go to ``update``, and
    a failure recorded by an earlier update attempt is cleared so the agent tries again."""
    (change,) = await set_state(db, stage_name, "update", run_id=run_id)
    await db.execute(Q.update_wait_clear, stage=stage(stage_name).name, id=run_id)
    return change


@dataclass(frozen=True)
class ProductFile:
    component: str | None
    rule: str
    file_class: str
    key: str
    exists: bool
    bytes: int | None
    md5sum: str | None
    gone: bool = False


async def components(db: Database, stage_name: str, run_id: int) -> list[Row]:
    await get_run(db, stage_name, run_id)
    return await db.fetch_all(_q("runs_components", stage_name), id=run_id)


async def run_files(db: Database, stage_name: str, run_id: int, *,
                    md5: bool = False) -> list[ProductFile]:
    """Every product file of every component of a run, with what storage knows of it."""
    comps = await components(db, stage_name, run_id)
    chips: list[str] = []
    if stage_name == "camera":
        chips = [r["class_id"] for r in await db.fetch_all(Q.runs_camera_chips, id=run_id)]
    planned: list[tuple[str | None, str, str, str]] = []
    seen: set[str] = set()
    for comp in comps:
        if stage_name == "raw":
            if comp["uri"]:
                planned.append((comp["component"], "RAW.IMAGE", "raw", comp["uri"]))
            continue
        if not comp["path_base"]:
            continue
        for r in rules_for(stage_name):
            names = chips if r.per_chip else [comp["component"]]
            for name in names:
                key = r.filename(comp["path_base"], name)
                if key in seen:  # a run-level file (e.g. the chip stage's b1 mosaic)
                    continue
                seen.add(key)
                shared_file = "{CHIP.NAME}" not in r.pattern and stage_name == "chip"
                owner = None if shared_file else (name if r.per_chip else comp["component"])
                planned.append((owner, r.name, r.file_class, key))
    storage = Storage(db)
    known = await storage.stat_many([key for *_, key in planned])
    files = []
    for component, rule_name, file_class, key in planned:
        obj = known.get(parse_key(key).path)
        files.append(ProductFile(
            component, rule_name, file_class, key, obj is not None,
            None if obj is None else int(obj["bytes"]),
            None if obj is None else str(obj["md5sum"]),
            gone=obj is not None and int(obj["instances"] or 0) > 0
            and int(obj["lost"] or 0) == int(obj["instances"]),
        ))
    if md5:
        files = [await _with_md5(storage, f) for f in files]
    return files


async def _with_md5(storage: Storage, f: ProductFile) -> ProductFile:
    """Recompute the md5 from the file itself (not the recorded one)."""
    if not f.exists or f.gone:
        return f
    try:
        path = await storage.locate(f.key)
    except StorageError:  # registered but no readable instance: no md5 to show
        return ProductFile(f.component, f.rule, f.file_class, f.key, f.exists, f.bytes, None,
                           f.gone)
    size, digest = await asyncio.to_thread(_hash_file, path)
    return ProductFile(f.component, f.rule, f.file_class, f.key, True, size, digest, f.gone)


def file_dict(f: ProductFile) -> dict[str, Any]:
    return {"component": f.component, "rule": f.rule, "class": f.file_class, "key": f.key,
            "exists": f.exists, "gone": f.gone, "bytes": f.bytes, "md5sum": f.md5sum}
