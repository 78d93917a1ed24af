"""PNG plots for operators (matplotlib, no display needed): where on the sky the pending items
of each batch type are, how a config's batches progressed through the life cycle over time,
and the cleanup / update / distribution side (runs by state per stage, bytes freed, updates
served, filesets shipped).

Data is read from the database first (async); drawing is plain synchronous code meant to run
in a worker thread. File names: ``<config>_<type>_<timestamp>.png`` (density, seed 003's
``newsa3_OB_2012_0410_113615.png``), ``<config>_progress_<timestamp>.png`` and
``lifecycle_<timestamp>.png``; the timestamp is UTC, ``YYYY_MMDD_HHMMSS``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shared.db.database import Database
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.observe import metrics
from shared.psps import configs

KINDS = ("density", "progress", "lifecycle")
#: The batch types a density plot is drawn for (the IN batch has no place on the sky).
DENSITY_TYPES = ("P2", "ST", "OB")
Series = dict[str, list[tuple[datetime, float]]]


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, never a screen), imported on first
    use so commands that draw nothing start quickly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: seed 003's plot timestamp: ``2012_0410_113615``.
STAMP_FORMAT = "%Y_%m%d_%H%M%S"
_STAMPED = re.compile(r"^(?P<kind>.+)_[0-9]{4}_[0-9]{4}_[0-9]{6}\.png\Z")


def stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime(STAMP_FORMAT)


def plot_kind(name: str) -> str | None:
    """What a plot file shows, without its timestamp: ``newsa3_OB`` for
    ``newsa3_OB_2012_0410_113615.png``; None for a name not made here."""
    match = _STAMPED.match(name)
    return match.group("kind") if match else None


def _save(fig: Any, path: Path) -> Path:
    """Write through a temporary name, so a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=90)
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


# -- density of pending items ---------------------------------------------------------------


def draw_density(
    config: str,
    kind: str,
    ra: np.ndarray[Any, Any],
    dec: np.ndarray[Any, Any],
    box: tuple[float, float, float, float],
    box_size_deg: float,
    path: Path,
) -> Path:
    min_ra, max_ra, min_dec, max_dec = box
    bins = (
        max(1, int(np.ceil((max_ra - min_ra) / box_size_deg))),
        max(1, int(np.ceil((max_dec - min_dec) / box_size_deg))),
    )
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    if len(ra):
        _counts, _, _, image = ax.hist2d(
            ra, dec, bins=bins, range=[[min_ra, max_ra], [min_dec, max_dec]], cmap="viridis"
        )
        fig.colorbar(image, ax=ax, label="pending items per box")
    else:
        ax.set_xlim(min_ra, max_ra)
        ax.set_ylim(min_dec, max_dec)
        ax.text(0.5, 0.5, f"nothing pending for {kind}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.invert_xaxis()
    ax.set_title(f"{config}: {len(ra)} pending {kind} items ({stamp()} UTC)")
    return _save(fig, path)


async def density(db: Database, config: str, out_dir: Path, *, every_type: bool = False) -> list[Path]:
    """One plot per batch type that has pending items; with ``every_type`` one for each of
    P2, ST and OB, saying so where nothing is pending (seed 003's ``plotter.py cfg density``)."""
    cfg = await configs.load(db, config)
    by_type: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in await db.fetch_all(Q.metrics_items_pending, config=config):
        by_type[str(row["type"])].append((float(row["ra"]), float(row["decl"])))
    kinds = sorted(set(by_type) | (set(DENSITY_TYPES) if every_type else set()))
    written = []
    for kind in kinds:
        pts = np.asarray(by_type.get(kind, []), dtype=np.float64).reshape(-1, 2)
        path = out_dir / f"{config}_{kind}_{stamp()}.png"
        written.append(
            await asyncio.to_thread(
                draw_density,
                config,
                kind,
                pts[:, 0],
                pts[:, 1],
                (cfg.min_ra, cfg.max_ra, cfg.min_dec, cfg.max_dec),
                float(cfg.box_size_deg),
                path,
            )
        )
    return written


# -- progress over time ---------------------------------------------------------------------


def draw_progress(config: str, succeeded: dict[str, list[tuple[datetime, float]]], path: Path) -> Path:
    fig, ax = _pyplot().subplots(figsize=(8, 4.5))
    for stage in metrics.BATCH_STAGES:
        points = succeeded.get(stage)
        if points:
            ax.plot(
                np.array([p[0] for p in points], dtype="datetime64[us]"),
                [p[1] for p in points],
                label=stage,
                marker=".",
            )
    ax.set_ylabel("batches succeeded")
    ax.set_title(f"{config}: batches through the life cycle")
    if succeeded:
        ax.legend(fontsize="small")
    else:
        ax.text(
            0.5, 0.5, "no samples yet (the metrics agent writes them)", ha="center", transform=ax.transAxes
        )
    fig.autofmt_xdate()
    return _save(fig, path)


def _sum_by(series: Series, key: str, where: dict[str, str]) -> dict[str, list[tuple[datetime, float]]]:
    """Add up a metric's series over label sets, grouped by one label, filtered by others."""
    totals: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for labels, points in series.items():
        parts = dict(p.split("=", 1) for p in labels.split(",") if "=" in p)
        if any(parts.get(k) != v for k, v in where.items()) or key not in parts:
            continue
        for when, value in points:
            totals[parts[key]][when] += value
    return {k: sorted(v.items()) for k, v in totals.items()}


async def progress(db: Database, config: str, out_dir: Path, since_s: float = 7 * 86400) -> list[Path]:
    series = await metrics.series(db, "psps_batches", since_s)
    where = {"outcome": "succeeded"} | ({} if config == "all" else {"config": config})
    succeeded = _sum_by(series, "stage", where)
    path = out_dir / f"{config}_progress_{stamp()}.png"
    return [await asyncio.to_thread(draw_progress, config, succeeded, path)]


# -- the cleanup / update / distribution side ----------------------------------------------


def draw_lifecycle(runs: dict[str, dict[str, int]], totals: dict[str, Series], path: Path) -> Path:
    fig, axes = _pyplot().subplots(1, 2, figsize=(12, 4.5))
    stages = list(runs)
    states = sorted({s for counts in runs.values() for s in counts})
    bottom = np.zeros(len(stages))
    for state in states:
        values = np.array([runs[st].get(state, 0) for st in stages], dtype=float)
        axes[0].bar(stages, values, bottom=bottom, label=state)
        bottom += values
    axes[0].set_title("runs by state per stage")
    if states:
        axes[0].legend(fontsize="small")
    ax = axes[1]
    drawn = 0
    for label, points in totals.items():
        for _, series in points.items():
            if series:
                ax.plot(
                    np.array([p[0] for p in series], dtype="datetime64[us]"),
                    [p[1] for p in series],
                    label=label,
                    marker=".",
                )
                drawn += 1
    ax.set_title("bytes freed, updates served, filesets shipped (totals)")
    if drawn:
        ax.set_yscale("symlog")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no totals sampled yet", ha="center", transform=ax.transAxes)
    fig.autofmt_xdate()
    return _save(fig, path)


TOTALS = {
    "bytes freed (cleanup)": "cleanup.bytes_freed",
    "runs updated": "update.runs_updated",
    "filesets shipped": "dist_server.filesets_shipped",
    "filesets imported": "dist_client.filesets_imported",
}


async def lifecycle(dbs: Databases, out_dir: Path, since_s: float = 7 * 86400) -> list[Path]:
    life = await metrics.lifecycle(dbs)
    series = await metrics.series(dbs.ipptopsps, "agent_total", since_s)
    totals = {
        label: {k: v for k, v in series.items() if k == f"name={name}"} for label, name in TOTALS.items()
    }
    path = out_dir / f"lifecycle_{stamp()}.png"
    return [await asyncio.to_thread(draw_lifecycle, life.runs, totals, path)]


async def plot(dbs: Databases, config: str, kind: str, out_dir: Path) -> list[Path]:
    """``ippctl plot CONFIG KIND``: the plots of one kind."""
    if kind == "density":
        return await density(dbs.ipptopsps, config, out_dir, every_type=True)
    if kind == "progress":
        return await progress(dbs.ipptopsps, config, out_dir)
    if kind == "lifecycle":
        return await lifecycle(dbs, out_dir)
    raise ValueError(f"unknown plot {kind!r} (plots: {', '.join(KINDS)})")
