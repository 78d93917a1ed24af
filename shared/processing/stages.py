"""Stages, states and the transitions operators may ask for (REFERENCE 1).

One table of data: each stage's run table, id column, component table and key, and whether
components carry their own ``data_state``. Code that needs a stage's shape looks it up here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.core.errors import IppError

#: Every valid run ``state`` and component ``data_state``.
STATES: tuple[str, ...] = (
    "new", "reg", "full", "drop", "wait", "keep", "ignore",
    "goto_cleaned", "error_cleaned", "goto_purged", "error_purged",
    "goto_scrubbed", "error_scrubbed", "cleaned", "update", "purged", "scrubbed",
)

#: Cleanup goals and the state each ends in.
CLEANUP_TARGETS: dict[str, str] = {
    "goto_cleaned": "cleaned", "goto_purged": "purged", "goto_scrubbed": "scrubbed",
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


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("raw", "rawExp", "exp_id", "rawImfile", "class_id", True,
          ("rawExp", "rawImfile"), lifecycle=False),
    Stage("chip", "chipRun", "chip_id", "chipProcessedImfile", "class_id", True,
          ("chipRun", "chipImfile", "chipProcessedImfile")),
    Stage("camera", "camRun", "cam_id", "camProcessedExp", None, False,
          ("camRun", "camProcessedExp")),
    Stage("warp", "warpRun", "warp_id", "warpSkyfile", "skycell_id", True,
          ("warpRun", "warpImfile", "warpSkyfile", "warpSkyCellMap")),
    Stage("diff", "diffRun", "diff_id", "diffSkyfile", "skycell_id", True,
          ("diffRun", "diffInputSkyfile", "diffSkyfile")),
    Stage("stack", "stackRun", "stack_id", "stackSumSkyfile", None, False,
          ("stackRun", "stackInputSkyfile", "stackSumSkyfile")),
)}


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
    "goto_cleaned": frozenset({"full", "cleaned", "error_cleaned", "update", "drop",
                               "goto_cleaned"}),
    # a pending clean or scrub may be escalated to a purge (it deletes a superset).
    "goto_purged": frozenset({"full", "cleaned", "scrubbed", "error_cleaned", "error_purged",
                              "error_scrubbed", "update", "drop", "goto_purged",
                              "goto_cleaned", "goto_scrubbed"}),
    "goto_scrubbed": frozenset({"full", "cleaned", "error_cleaned", "error_scrubbed",
                                "goto_scrubbed"}),
    # pixels back: only what cleanup left regenerable.
    "update": frozenset({"cleaned", "scrubbed", "error_cleaned", "update"}),
}

_REFUSALS: dict[str, str] = {
    "purged": "a purged run has lost its config dump and catalogs and cannot be regenerated "
              "or cleaned again",
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
        raise StageError(f"{st.run_table} {run_id}: {stage_name} runs are not cleaned or "
                         "updated by the IPP agents")
    if target not in ALLOWED_FROM:
        raise StageError(f"{target!r} cannot be set by an operator (allowed: "
                         f"{', '.join(OPERATOR_TARGETS)})")
    if current in ALLOWED_FROM[target]:
        return
    reason = _REFUSALS.get(current)
    if reason is None and current.startswith("goto_"):
        reason = f"cleanup ({current}) is pending; wait for it or set the same goal again"
    if reason is None:
        allowed = ", ".join(sorted(ALLOWED_FROM[target]))
        reason = f"{target} may only be set from: {allowed}"
    raise StageError(f"{st.run_table} {run_id} is {current}: cannot set {target}: {reason}")
