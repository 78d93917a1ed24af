"""Stages, states and the transitions operators may ask for (REFERENCE 1).

One table of data: each stage's run table, id column, component table and key, and whether
components carry their own ``data_state``. Code that needs a stage's shape looks it up here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.errors import IppError
from shared.db.queries import Q, Query

#: Every valid run ``state`` and component ``data_state``.
STATES: tuple[str, ...] = (
    "new",
    "reg",
    "full",
    "drop",
    "wait",
    "keep",
    "ignore",
    "goto_cleaned",
    "error_cleaned",
    "goto_purged",
    "error_purged",
    "goto_scrubbed",
    "error_scrubbed",
    "cleaned",
    "update",
    "purged",
    "scrubbed",
)

#: Cleanup goals and the state each ends in.
CLEANUP_TARGETS: dict[str, str] = {
    "goto_cleaned": "cleaned",
    "goto_purged": "purged",
    "goto_scrubbed": "scrubbed",
}
#: The states an operator may set with ``ippctl runs set-state``.
OPERATOR_TARGETS: tuple[str, ...] = (*CLEANUP_TARGETS, "update")


class StageError(IppError):
    """An unknown stage or state, or a transition REFERENCE 1 does not allow."""


@dataclass(frozen=True)
class Stage:
    name: str
    run_table: str
    id_column: str
    component_table: str | None
    component_key: str | None
    per_file_state: bool
    #: Tables exported for this stage (REFERENCE 4), parents first.
    export_tables: tuple[str, ...]
    #: Whether the cleanup and update agents act on this stage.
    lifecycle: bool = True


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "raw", "rawExp", "exp_id", "rawImfile", "class_id", True, ("rawExp", "rawImfile"), lifecycle=False
        ),
        Stage(
            "chip",
            "chipRun",
            "chip_id",
            "chipProcessedImfile",
            "class_id",
            True,
            ("chipRun", "chipImfile", "chipProcessedImfile"),
        ),
        Stage("camera", "camRun", "cam_id", "camProcessedExp", None, False, ("camRun", "camProcessedExp")),
        Stage(
            "fake",
            "fakeRun",
            "fake_id",
            "fakeProcessedImfile",
            "class_id",
            True,
            ("fakeRun", "fakeProcessedImfile"),
            lifecycle=False,
        ),
        Stage(
            "warp",
            "warpRun",
            "warp_id",
            "warpSkyfile",
            "skycell_id",
            True,
            ("warpRun", "warpImfile", "warpSkyfile", "warpSkyCellMap"),
        ),
        Stage(
            "diff",
            "diffRun",
            "diff_id",
            "diffSkyfile",
            "skycell_id",
            True,
            ("diffRun", "diffInputSkyfile", "diffSkyfile"),
        ),
        Stage(
            "stack",
            "stackRun",
            "stack_id",
            "stackSumSkyfile",
            None,
            False,
            ("stackRun", "stackInputSkyfile", "stackSumSkyfile"),
        ),
    )
}


#: The stages the cleanup and update agents act on (every one but raw), in pipeline order.
LIFECYCLE_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if s.lifecycle)
#: The stages whose components carry their own data_state (cleaned component by component).
COMPONENT_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if s.lifecycle and s.per_file_state)

#: Every family of per-stage named queries (``<family>_<stage>``) and the stages it exists for.
QUERY_FAMILIES: dict[str, tuple[str, ...]] = {
    "runs_get": tuple(STAGES),
    "runs_list": tuple(STAGES),
    "runs_set_state": tuple(STAGES),
    "runs_by_label": tuple(STAGES),
    "runs_components": tuple(STAGES),
    "runs_components_to_update": COMPONENT_STAGES,
    "cleanup_claim": LIFECYCLE_STAGES,
    "cleanup_claim_nearby": LIFECYCLE_STAGES,
    "cleanup_claim_lock": LIFECYCLE_STAGES,
    "cleanup_finish": LIFECYCLE_STAGES,
    "cleanup_components_state": COMPONENT_STAGES,
    "update_claim": LIFECYCLE_STAGES,
    "update_finish": LIFECYCLE_STAGES,
    "update_release": LIFECYCLE_STAGES,
    "update_components_full": COMPONENT_STAGES,
    "dist_candidates": LIFECYCLE_STAGES,
    "demo_runs": LIFECYCLE_STAGES,
    "demo_run_state": LIFECYCLE_STAGES,
}


_LIFECYCLE_TABLES = tuple(STAGES[s].run_table for s in LIFECYCLE_STAGES)
#: Families of per-table queries (``<family>_<table>``): run claims, exports (REFERENCE 4).
TABLE_FAMILIES: dict[str, tuple[str, ...]] = {
    "claim_mark": _LIFECYCLE_TABLES,
    "claim_release": _LIFECYCLE_TABLES,
    "claim_release_orphans": _LIFECYCLE_TABLES,
    "export": tuple(t for s in STAGES.values() for t in s.export_tables),
}


def _lookup(families: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], Query]:
    """Every query of the families, looked up once at import: a family missing for one of
    its stages (or tables) fails here, not when that path first runs."""
    found, missing = {}, []
    for family, names in families.items():
        for name in names:
            try:
                found[(family, name)] = getattr(Q, f"{family}_{name}")
            except AttributeError:
                missing.append(f"{family}_{name}")
    if missing:
        raise RuntimeError(f"per-stage queries missing from shared/db/sql: {', '.join(missing)}")
    return found


_STAGE_QUERIES = _lookup(QUERY_FAMILIES)
_TABLE_QUERIES = _lookup(TABLE_FAMILIES)


def stage_query(family: str, stage_name: str) -> Query:
    """The ``family`` query of one stage (``stage_query("cleanup_finish", "warp")``)."""
    try:
        return _STAGE_QUERIES[(family, stage_name)]
    except KeyError:
        if family not in QUERY_FAMILIES:
            raise StageError(f"no per-stage query family {family!r}") from None
        raise StageError(
            f"query family {family} has no {stage_name!r} query (stages: {', '.join(QUERY_FAMILIES[family])})"
        ) from None


def table_query(family: str, table: str) -> Query:
    """The ``family`` query of one table (``table_query("export", "warpSkyfile")``)."""
    try:
        return _TABLE_QUERIES[(family, table)]
    except KeyError:
        raise StageError(f"no {family} query for table {table!r}") from None


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})") from None


def check_state(state: str) -> str:
    if state not in STATES:
        raise StageError(f"unknown state {state!r} (states: {', '.join(STATES)})")
    return state


#: For each operator target, the run states it may be set from, and why others are refused.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    # full runs are cleaned; cleaned runs again for a second pass (REFERENCE 1); errors retried;
    # an update nobody needs any more may go back to cleanup; dropped runs may be cleaned.
    "goto_cleaned": frozenset({"full", "cleaned", "error_cleaned", "update", "drop", "goto_cleaned"}),
    # a pending clean or scrub may be escalated to a purge (it deletes a superset).
    "goto_purged": frozenset(
        {
            "full",
            "cleaned",
            "scrubbed",
            "error_cleaned",
            "error_purged",
            "error_scrubbed",
            "update",
            "drop",
            "goto_purged",
            "goto_cleaned",
            "goto_scrubbed",
        }
    ),
    "goto_scrubbed": frozenset({"full", "cleaned", "error_cleaned", "error_scrubbed", "goto_scrubbed"}),
    # pixels back: only what cleanup left regenerable.
    "update": frozenset({"cleaned", "scrubbed", "error_cleaned", "update"}),
}

_REFUSALS: dict[str, str] = {
    "purged": "a purged run has lost its config dump and catalogs and cannot be regenerated or cleaned again",
    "new": "the run is still being processed",
    "reg": "the run is still being processed",
    "wait": "the run is waiting to be processed",
    "keep": "the run is marked keep",
    "ignore": "the run is marked ignore",
}


def check_transition(stage_name: str, run_id: int, current: str, target: str) -> None:
    """Raise StageError naming the run and the reason unless ``current -> target`` is allowed."""
    st = stage(stage_name)
    check_state(target)
    if not st.lifecycle:
        raise StageError(
            f"{st.run_table} {run_id}: {stage_name} runs are not cleaned or updated by the IPP agents"
        )
    if target not in ALLOWED_FROM:
        raise StageError(f"{target!r} cannot be set by an operator (allowed: {', '.join(OPERATOR_TARGETS)})")
    if current in ALLOWED_FROM[target]:
        return
    reason = _REFUSALS.get(current)
    if reason is None and current.startswith("goto_"):
        reason = f"cleanup ({current}) is pending; wait for it or set the same goal again"
    if reason is None:
        allowed = ", ".join(sorted(ALLOWED_FROM[target]))
        reason = f"{target} may only be set from: {allowed}"
    raise StageError(f"{st.run_table} {run_id} is {current}: cannot set {target}: {reason}")
