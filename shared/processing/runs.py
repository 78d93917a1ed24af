"""Run tools: list runs, change their state as REFERENCE 1 allows, list their product files.

Used by ``ippctl runs`` and by the agents. Queries are picked by stage name from the named
queries in ``shared/db/sql/queries/runs.sql``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from shared.core.errors import BadKey, StorageError
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q, Query
from shared.processing.filerules import FileRule, compressed_keys, rules_for
from shared.processing.filerules import rule as rule_of
from shared.processing.stages import (
    ALLOWED_FROM,
    StageError,
    check_state,
    check_transition,
    stage,
    stage_query,
)
from shared.storage.files import hash_file
from shared.storage.keys import NebKey, parse_key
from shared.storage.store import Storage


def _q(operation: str, stage_name: str) -> Query:
    return stage_query(operation, stage(stage_name).name)


async def list_runs(
    db: Database, stage_name: str, *, state: str | None = None, label: str | None = None, limit: int = 1000
) -> list[Row]:
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
    #: The run's label before and after, when the change relabels it.
    label_was: str | None = None
    label_now: str | None = None

    def describe(self, stage_name: str) -> str:
        text = f"{stage_name} {self.run_id}: {self.was} -> {self.now}"
        if self.label_now is not None and self.label_now != self.label_was:
            text += f" (label {self.label_was or '-'} -> {self.label_now})"
        return text


async def _select_runs(
    db: Database, stage_name: str, run_id: int | None, label: str | None, only_states: tuple[str, ...]
) -> list[Row]:
    """The runs a state change is for: one by id, or every run with a label (of the given
    states only, when some are given)."""
    st = stage(stage_name)
    for state in only_states:
        check_state(state)
    if run_id is not None:
        runs = [await get_run(db, stage_name, run_id)]
    else:
        runs = await db.fetch_all(_q("runs_by_label", stage_name), label=label)
        if not runs:
            raise StageError(f"no {st.run_table} has label {label!r}")
    chosen = [r for r in runs if not only_states or r["state"] in only_states]
    if not chosen:
        raise StageError(
            f"no {st.run_table} {'' if run_id is None else f'{run_id} '}"
            f"{'' if label is None else f'with label {label!r} '}is in state "
            f"{', '.join(only_states)}: nothing was changed"
        )
    return chosen


async def set_state(
    db: Database,
    stage_name: str,
    target: str,
    *,
    run_id: int | None = None,
    label: str | None = None,
    from_label: str | None = None,
    only_states: tuple[str, ...] = (),
    dry_run: bool = False,
) -> list[StateChange]:
    """Set runs (one by id, or every run with a label) to ``target``.

    With ``from_label`` the runs labelled ``from_label`` are taken and relabelled ``label`` in
    the same transaction: seed 000's second pass (``--state goto_cleaned --label second_pass
    --from-label L --only-state cleaned``), which the cleanup agent tells apart by its label.
    ``only_states`` leaves the label's runs in other states alone. Every run is checked
    against the transitions table first; if any is refused, nothing is changed and the error
    names each refused run. ``update`` also sets the run's cleaned components to ``update``.
    The UPDATE repeats the allowed-from condition, so a run that changed state meanwhile is
    reported, not overwritten. ``dry_run`` returns what would change and changes nothing.
    """
    check_state(target)
    st = stage(stage_name)
    if from_label is not None and (run_id is not None or label is None):
        raise StageError("--from-label needs --label (the new label) and no --id")
    if run_id is None and label is None:
        raise StageError("give --id or --label")
    if run_id is not None and label is not None:
        raise StageError("give exactly one of --id or --label")
    selected = from_label if from_label is not None else label
    runs = await _select_runs(db, stage_name, run_id, selected, only_states)
    refusals = []
    for run in runs:
        try:
            check_transition(stage_name, run["id"], run["state"], target)
        except StageError as exc:
            refusals.append(str(exc))
    if refusals:
        raise StageError("; ".join(refusals) + " (nothing was changed)")
    new_label = label if from_label is not None else None
    changes = [
        StateChange(run["id"], run["state"], target, selected if new_label else None, new_label)
        for run in runs
    ]
    if dry_run:
        return changes
    allowed = tuple(sorted(ALLOWED_FROM[target]))

    async def apply(tx: Tx) -> list[StateChange]:
        for change in changes:
            changed = await tx.execute(
                _q("runs_set_state", stage_name),
                id=change.run_id,
                state=target,
                allowed=allowed,
                new_label=new_label,
            )
            if changed != 1:
                raise StageError(
                    f"{st.run_table} {change.run_id} changed state meanwhile; nothing was changed, try again"
                )
            if target == "update" and st.per_file_state:
                await tx.execute(_q("runs_components_to_update", stage_name), id=change.run_id)
        return changes

    return await db.transaction(apply, name="runs_set_state")


async def request_update(db: Database, stage_name: str, run_id: int) -> StateChange:
    """Ask for a run's pixels back: the run (and its cleaned components) go to ``update``, and
    a failure recorded by an earlier update attempt is cleared so the agent tries again."""
    (change,) = await set_state(db, stage_name, "update", run_id=run_id)
    await db.execute(Q.update_wait_clear, stage=stage(stage_name).name, id=run_id)
    return change


async def path_base_owners(db: Database | Tx, bases: list[str]) -> dict[str, set[tuple[str, int]]]:
    """For each storage path of the given path_bases, the (stage, run id) of every run whose
    components have it. A path belongs to one run only: another owner means shared storage,
    which import refuses and cleanup will not delete.

    A key's volume is only a preference (REFERENCE 5): ``neb://a/x`` and ``neb://b/x`` are one
    file, so owners are found under every spelling of the path on the volumes of this site
    (and those the bases name), not by the whole path_base string."""
    paths = {storage_path(b) for b in bases}
    volumes = {str(v["name"]) for v in await db.fetch_all(Q.volumes_brief)}
    volumes |= {k.volume for b in bases if (k := _key_or_none(b)) is not None and k.volume}
    spellings = sorted({s for b in bases for s in _spellings(b, volumes)})
    owners: dict[str, set[tuple[str, int]]] = {}
    for start in range(0, len(spellings), 1000):
        chunk = tuple(spellings[start : start + 1000])
        for row in await db.fetch_all(Q.path_base_owners, bases=chunk):
            path = storage_path(str(row["path_base"]))
            if path in paths:
                owners.setdefault(path, set()).add((str(row["stage"]), int(row["id"])))
    return owners


def storage_path(base: str) -> str:
    """The object a path_base names, whatever volume it prefers (the text itself when it
    is not a ``neb://`` key)."""
    key = _key_or_none(base)
    return key.path if key is not None else base


def _key_or_none(base: str) -> NebKey | None:
    try:
        return parse_key(base)
    except BadKey:
        return None


def _spellings(base: str, volumes: set[str]) -> set[str]:
    """Every canonical way a path_base may name the same object here."""
    key = _key_or_none(base)
    if key is None:
        return {base}
    path = key.path
    found = {base, f"neb://any/{path}", f"neb:///{path}"}
    for volume in volumes:
        found |= {f"neb://{volume}/{path}", f"neb://~{volume}/{path}"}
    return found


def other_owners(
    owners: dict[str, set[tuple[str, int]]], path_base: str, stage_name: str, run_id: int
) -> list[str]:
    """The runs other than (stage, run_id) that own ``path_base``'s storage, named for a
    message."""
    return sorted(
        f"{stage(s).run_table} {i}"
        for s, i in owners.get(storage_path(path_base), set())
        if (s, i) != (stage_name, run_id)
    )


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
    #: A log listed under the name of its compressed copy (``<log>.gz``, or ``.bz2``).
    compressed: bool = False


@dataclass(frozen=True)
class Component:
    """One component of a run (``runs_components_<stage>``: the same columns for every
    stage): a chip (class_id), a skycell, or the run itself where it has none (camera)."""

    component: str | None
    #: Where its products are; "" when none is recorded.
    path_base: str
    uri: str | None
    #: Its own state where the stage keeps one per file (chip, warp, diff), else None.
    data_state: str | None
    quality: int
    fault: int
    magicked: int

    @classmethod
    def from_row(cls, row: Row) -> Component:
        return cls(
            row["component"],
            row["path_base"] or "",
            row["uri"],
            row["data_state"],
            int(row["quality"] or 0),
            int(row["fault"] or 0),
            int(row["magicked"] or 0),
        )


async def components(db: Database, stage_name: str, run_id: int) -> list[Component]:
    await get_run(db, stage_name, run_id)
    return [Component.from_row(r) for r in await db.fetch_all(_q("runs_components", stage_name), id=run_id)]


@dataclass(frozen=True)
class _Planned:
    component: str | None
    rule: FileRule
    key: str


async def _planned_files(db: Database, stage_name: str, run_id: int) -> list[_Planned]:
    """Every file the rules name for a run: per component, per chip of the exposure (camera
    streak masks), per input (stack kernels), and run-level files once."""
    comps = await components(db, stage_name, run_id)
    chips: list[str] = []
    inputs = 0
    if stage_name == "camera":
        chips = [r["class_id"] for r in await db.fetch_all(Q.runs_camera_chips, id=run_id)]
    if stage_name == "stack":
        inputs = int(await db.fetch_val(Q.runs_stack_inputs, id=run_id) or 0)
    planned: list[_Planned] = []
    seen: set[str] = set()
    for comp in comps:
        if stage_name == "raw":
            if comp.uri:
                planned.append(_Planned(comp.component, rule_of("raw", "RAW.IMAGE"), comp.uri))
            continue
        if not comp.path_base:
            continue
        for r in rules_for(stage_name):
            if r.per_input:
                named = [(comp.component, r.filename(comp.path_base, index=i)) for i in range(inputs)]
            else:
                names = chips if r.per_chip else [comp.component]
                named = [(name, r.filename(comp.path_base, name)) for name in names]
            for name, key in named:
                if key in seen:  # a run-level file (e.g. the chip stage's b1 mosaic)
                    continue
                seen.add(key)
                shared_file = "{CHIP.NAME}" not in r.pattern and stage_name == "chip"
                planned.append(_Planned(None if shared_file else name, r, key))
    return planned


async def run_files(db: Database, stage_name: str, run_id: int, *, md5: bool = False) -> list[ProductFile]:
    """Every product file of every component of a run, with what storage knows of it. A log
    that cleanup compressed is listed under its compressed name (REFERENCE 2), so a cleaned
    run's bundles carry it."""
    planned = await _planned_files(db, stage_name, run_id)
    storage = Storage(db)
    lookups = [p.key for p in planned]
    lookups += [k for p in planned if p.rule.file_class == "log" for k in compressed_keys(p.key)]
    known = await storage.stat_many(lookups)
    files = []
    for p in planned:
        key, compressed = p.key, False
        if p.rule.file_class == "log" and parse_key(key).path not in known:
            for candidate in compressed_keys(p.key):
                if parse_key(candidate).path in known:
                    key, compressed = candidate, True
                    break
        obj = known.get(parse_key(key).path)
        files.append(
            ProductFile(
                p.component,
                p.rule.name,
                p.rule.file_class,
                key,
                obj is not None,
                None if obj is None else int(obj["bytes"]),
                None if obj is None else str(obj["md5sum"]),
                gone=obj is not None
                and int(obj["instances"] or 0) > 0
                and int(obj["lost"] or 0) == int(obj["instances"]),
                compressed=compressed,
            )
        )
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
        return replace(f, md5sum=None)
    size, digest = await asyncio.to_thread(hash_file, path)
    return replace(f, exists=True, bytes=size, md5sum=digest)


def file_dict(f: ProductFile) -> dict[str, Any]:
    return {
        "component": f.component,
        "rule": f.rule,
        "class": f.file_class,
        "key": f.key,
        "exists": f.exists,
        "gone": f.gone,
        "bytes": f.bytes,
        "md5sum": f.md5sum,
        "compressed": f.compressed,
    }
