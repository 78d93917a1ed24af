"""The reference processor as a program: ``python -m sim.regen JOB.json``.

The update agent regenerates a run by writing a job file and running the stage's command
(this program unless the site configures its own) with the job file as its last argument.
The job names every input as a local file and every wanted output as a path to write; the
program writes exactly those outputs and nothing else, and exits 0. Any other exit status
means failure, with the reason on stderr. A site's own program only has to honour the same
job format (docs/formats.md, "Update jobs").

Job format (JSON)::

    {"stage": "chip" | "warp" | "stack" | "diff",
     "tasks": [{"component": "XY33" | "skycell.1100.004" | null,
                "kind": "component" | "fpa",
                "dump": "/path/config dump (recipes)" | null,     # null: current recipes
                "dump_values": {"EXP_NAME": ..., ...},             # for a new dump
                "outputs": {"<file rule>": "/path", ...},
                "recovery": {"<file rule>": "/path", ...},   # chip: pre-destreak copies
                "inputs": {...}}]}                           # per stage, see below

Inputs per stage: chip ``raw``, ``exposure``, ``image_id``, ``chip_id``, ``class_id``,
``streak_mask`` (path or null: apply the camera stage's streak mask after regeneration),
``run_photometry``; chip ``fpa`` tasks ``bins`` {class_id: [b1, b2]}; warp ``skycell``,
``exposure``, ``chips`` {class_id: [image, mask, variance]}; stack ``skycell``, ``filter``,
``stack_id``, ``warps`` [{image, mask, variance, exposure}]; diff ``skycell``, ``warp``,
``stack`` (each {image, mask, variance, exposure}). An ``exposure`` is its rawExp columns
(exp_id, exp_name, filter, dateobs as ISO text, exp_time, airmass, ra, decl); a ``skycell``
its skycell row (tess_id, skycell_id, ra, decl, size_px, scale_deg).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.core.errors import IppError
from sim import imaging, processor
from sim.processor import ChipInputs, ChipPixels, Exposure, WarpPixels
from sim.sky import Skycell, chip_wcs, skycell_from_row

Products = dict[str, bytes]


class JobError(IppError):
    """A job file that cannot be run: names the job and what is wrong with it."""


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _pixels(path: str) -> Any:
    return imaging.read_fits_image(_read(path))[0]


def _exposure(d: dict[str, Any]) -> Exposure:
    """The exposure from its rawExp columns (dateobs as ISO text)."""
    return Exposure.from_row(d)


def _sky(d: dict[str, Any]) -> Skycell:
    return skycell_from_row(d)


def _warp_pixels(d: dict[str, Any]) -> WarpPixels:
    e = _exposure(d["exposure"])
    return WarpPixels(
        _pixels(d["image"]), _pixels(d["mask"]), _pixels(d["variance"]), e.exptime, e.zpt_obs, e.mjd
    )


def chip(task: dict[str, Any], dump: bytes) -> tuple[Products, Products]:
    """(products, recovery copies) of one chip, destreaked with the camera's mask if asked."""
    inp = task["inputs"]
    if task.get("kind") == "fpa":
        b1 = {c: _pixels(p[0]) for c, p in sorted(inp["bins"].items())}
        b2 = {c: _pixels(p[1]) for c, p in sorted(inp["bins"].items())}
        return processor.chip_fpa_products(b1, b2), {}
    raw = _read(inp["raw"])
    size = imaging.read_fits_image(raw)[0].shape[0]
    e = _exposure(inp["exposure"])
    wcs = chip_wcs(e.ra, e.dec, inp["class_id"], size)
    block = processor.read_recipe(dump, task.get("dump") or "current recipes")
    result = processor.process_chip(
        raw,
        block,
        ChipInputs(inp["class_id"], e, int(inp["image_id"]), int(inp["chip_id"]), wcs),
        dump=dump,
        run_photometry=bool(inp["run_photometry"]),
    )
    products = result.products
    if inp.get("streak_mask"):
        originals = {n: products[n] for n in processor.DESTREAK_RULES}
        return processor.destreak(products, _pixels(inp["streak_mask"]), wcs.header()), originals
    return products, {}


def warp(task: dict[str, Any], dump: bytes) -> tuple[Products, Products]:
    inp = task["inputs"]
    e = _exposure(inp["exposure"])
    chips = {}
    for class_id, (image, mask, variance) in sorted(inp["chips"].items()):
        img = _pixels(image)
        chips[class_id] = ChipPixels(
            chip_wcs(e.ra, e.dec, class_id, img.shape[0]), img, _pixels(mask), _pixels(variance)
        )
    block = processor.read_recipe(dump, task.get("dump") or "current recipes")
    return processor.process_warp(chips, _sky(inp["skycell"]), block, e, dump=dump), {}


def stack(task: dict[str, Any], dump: bytes) -> tuple[Products, Products]:
    inp = task["inputs"]
    block = processor.read_recipe(dump, task.get("dump") or "current recipes")
    return processor.process_stack(
        [_warp_pixels(w) for w in inp["warps"]],
        _sky(inp["skycell"]),
        block,
        inp["filter"],
        dump=dump,
        stack_id=int(inp["stack_id"]),
    ), {}


def diff(task: dict[str, Any], dump: bytes) -> tuple[Products, Products]:
    inp = task["inputs"]
    block = processor.read_recipe(dump, task.get("dump") or "current recipes")
    return processor.process_diff(
        _warp_pixels(inp["warp"]), _warp_pixels(inp["stack"]), _sky(inp["skycell"]), block, dump=dump
    ), {}


STAGES: dict[str, Callable[[dict[str, Any], bytes], tuple[Products, Products]]] = {
    "chip": chip,
    "warp": warp,
    "stack": stack,
    "diff": diff,
}


def _write(path: str, data: bytes) -> None:
    """Write through a temporary name so a killed run never leaves a partial output."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _dump(stage: str, task: dict[str, Any]) -> bytes:
    """The run's config dump, or (dump null) a new one with the current recipes."""
    if task.get("dump"):
        return _read(task["dump"])
    return processor.dump_for(stage, processor.recipe(stage), task.get("dump_values") or {})


def run_task(stage: str, task: dict[str, Any]) -> list[str]:
    """Regenerate one task's wanted outputs; returns the paths written."""
    dump = _dump(stage, task)
    products, originals = STAGES[stage](task, dump)
    written = []
    for wanted, (source, paths) in (
        ("output", (products, task.get("outputs", {}))),
        ("recovery", (originals, task.get("recovery", {}))),
    ):
        for rule_name, path in sorted(paths.items()):
            if rule_name not in source:
                raise JobError(
                    f"task {task.get('component')}: the {stage} processor makes no {wanted} {rule_name}"
                )
            _write(path, source[rule_name])
            written.append(path)
    return written


def load_job(path: Path) -> dict[str, Any]:
    try:
        job = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"{path}: not a readable job file ({exc})") from None
    if not isinstance(job, dict) or job.get("stage") not in STAGES:
        raise JobError(f"{path}: 'stage' must be one of {', '.join(STAGES)}")
    if not isinstance(job.get("tasks"), list):
        raise JobError(f"{path}: 'tasks' must be a list")
    return job


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sim.regen JOB.json", file=sys.stderr)
        return 2
    try:
        job = load_job(Path(args[0]))
        for task in job["tasks"]:
            run_task(job["stage"], task)
    except JobError as exc:
        print(f"regen: {exc}", file=sys.stderr)
        return 2
    except (IppError, OSError, KeyError, ValueError, TypeError) as exc:
        print(f"regen: {args[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
