"""``python -m bench.scale [--large] [--sizes N ...]``: how cost grows with the database.

Every other benchmark runs on a survey of a few exposures; an IPP site holds about a million
runs per stage and tens of millions of components. This one fills the processing tables to
10^4, 10^5 and 10^6 component rows (``--large``: 10^7 too), with one run per exposure and
stage in proportion (60 chips, 1 camera exposure, 30 warp and 8 diff skyfiles an exposure, a
stack per ten), most of them cleaned, a few thousand waiting (spread over the ids and all at
the newest ones), and measures at each size what agents and operators do every loop or page:

- per item (goal: within 2x from the smallest size to the largest): a cleanup claim and
  finish, an update claim, the dist candidates query and ``ippctl runs list --label`` asked
  for the first candidate and 5 runs, and the console's 5-second
  partials (also under 200 ms at the largest size);
- per pass (goal: linear or better): ``cleanup_pending_labels``, the dist candidates query
  and ``ippctl runs list --label`` as the agents and operators ask them (1000 rows), the
  console overview, the metrics agent's database pass (snapshot and record), ``ippctl
  storage audit`` of a volume of one object per ten components (files on disk), and the
  loader queue over one P2 item per exposure (first pass and again).

Writes bench/results/scale.md (the table), scale.json and scale.png (the curves).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agents.metrics import snapshot
from bench.common import RESULTS, Figure, bench_database, machine
from shared.console import app as console_app
from shared.console.auth import Sessions, add_user, console_key
from shared.console.pages import COOKIE
from shared.core.log import get_logger
from shared.core.settings import Settings
from shared.db.columns import TextLimits
from shared.db.database import Database
from shared.db.queries import Q, Query, QueryBook, load_queries
from shared.db.roles import Databases
from shared.observe import metrics
from shared.processing import runs
from shared.processing.runclaims import CLEANUP_SPECS, UPDATE_SPECS
from shared.psps import configs
from shared.psps.queue import queue
from shared.runtime.claims import Claimer
from shared.storage.store import Storage

B = QueryBook(load_queries(Path(__file__).resolve().parent / "sql"))
SIZES = (10**4, 10**5, 10**6)
LARGE = (*SIZES, 10**7)
#: Components per exposure: 60 chips + 1 camera + 30 warp + 8 diff skyfiles + 0.1 stack.
PER_EXPOSURE = 100
#: Runs filled per statement (60 chip components each).
CHUNK_RUNS = 5000
#: Claims measured per size (cleanup: claim and finish; update: claim and hand back).
CLAIMS = 300
#: The console's refresh must answer within this at the largest size (issue 30).
REFRESH_LIMIT_MS = 200.0
ANCHOR = "same at the smallest size"
log = get_logger("bench.scale")


@dataclass(frozen=True)
class Shape:
    """The survey a number of component rows stands for."""

    components: int

    @property
    def exposures(self) -> int:
        return max(10, self.components // PER_EXPOSURE)

    @property
    def pending(self) -> int:
        """Runs of a stage waiting for cleanup: a few thousand, fewer on a small survey."""
        return min(2000, self.exposures // 5)

    @property
    def stride(self) -> int:
        return max(10, self.exposures // max(1, self.pending // 2))

    @property
    def objects(self) -> int:
        return max(100, self.components // 10)


@dataclass(frozen=True)
class Measure:
    """One figure of the curve: its name, whether it is per item or per pass, its unit."""

    name: str
    per: str  # "item" or "pass"


MEASURES = (
    Measure("cleanup claim + finish", "item"),
    Measure("update claim", "item"),
    Measure("dist candidates (first)", "item"),
    Measure("ippctl runs list --label --limit 5", "item"),
    Measure("console /partials/clients", "item"),
    Measure("console /partials/pipelines", "item"),
    Measure("cleanup_pending_labels", "pass"),
    Measure("dist candidates (1000)", "pass"),
    Measure("ippctl runs list --label", "pass"),
    Measure("console overview", "pass"),
    Measure("metrics pass (database)", "pass"),
    Measure("storage audit", "pass"),
    Measure("loader queue (first)", "pass"),
    Measure("loader queue (again)", "pass"),
)


# -- filling -------------------------------------------------------------------------------


async def fill(db: Database, shape: Shape, volume_root: Path) -> float:
    """Fill the tables for ``shape``; returns the seconds it took (not a figure)."""
    if await db.fetch_val(B.scale_sequence_engine) is None:
        raise RuntimeError(
            "bench.scale fills tables with MariaDB's SEQUENCE engine (seq_1_to_N); this server has none"
        )
    started = time.perf_counter()
    e = shape.exposures
    states = {"runs": e, "newest": shape.pending // 2, "stride": shape.stride}
    steps: tuple[tuple[Query, dict[str, int]], ...] = (
        (B.scale_exposures, {}),
        (B.scale_chip_runs, states),
        (B.scale_chip_components, {}),
        (B.scale_camera_runs, {}),
        (B.scale_camera_components, {}),
        (B.scale_warp_runs, {}),
        (B.scale_warp_components, {}),
        (B.scale_diff_runs, {}),
        (B.scale_diff_components, {}),
        (B.scale_stack_runs, {}),
        (B.scale_distributed, {}),
        (B.scale_added, {}),
    )
    for query, params in steps:
        for lo in range(1, e + 1, CHUNK_RUNS):
            await db.execute(query, lo=lo, hi=min(e, lo + CHUNK_RUNS - 1), **params)
    vol_id = await db.insert(Q.add_volume, name="scale", host="", root=str(volume_root), allocate=1)
    for lo in range(1, shape.objects + 1, CHUNK_RUNS * 20):
        hi = min(shape.objects, lo + CHUNK_RUNS * 20 - 1)
        await db.execute(B.scale_objects, lo=lo, hi=hi)
        await db.execute(B.scale_instances, lo=lo, hi=hi, vol_id=vol_id)
    await asyncio.to_thread(_files, volume_root, shape.objects)
    return time.perf_counter() - started


def _files(root: Path, n: int) -> None:
    """The volume's files, as scale_instances names them (empty: the audit reads names)."""
    for d in range(1000):
        (root / "objects" / str(d)).mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (root / "objects" / str(i % 1000) / f"{i}.fits").touch()
    os.sync()  # the writeback of a million new inodes would fall into the figures


# -- measuring -----------------------------------------------------------------------------


async def _median_ms(step: Callable[[], Awaitable[Any]], times: int) -> float:
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        await step()
        taken.append((time.perf_counter() - started) * 1000)
    return statistics.median(taken)


async def cleanup_claims(db: Database, limit: int) -> float:
    """Milliseconds per run to claim and finish chip runs as the cleanup agent does (label by
    label, highest priority first), without the file work."""
    claimer = Claimer(db, str(uuid.uuid4()))
    spec = CLEANUP_SPECS["chip"]
    done, started = 0, time.perf_counter()
    for pending in await db.fetch_all(Q.cleanup_pending_labels):
        if pending["stage"] != "chip":
            continue
        while done < limit:
            rows = await claimer.claim(spec, limit=1, label=pending["label"])
            if not rows:
                break
            await claimer.finish(
                spec, Q.cleanup_finish_chip, rows[0]["id"], state="cleaned", unmagic=False, note=None,
                goal="goto_cleaned",
            )  # fmt: skip
            done += 1
    return (time.perf_counter() - started) * 1000 / max(1, done)


async def update_claims(db: Database, limit: int) -> float:
    """Milliseconds per claim of chip runs in update, as the update agent's pass does (each run
    once, in id order), each handed back."""
    claimer = Claimer(db, str(uuid.uuid4()))
    spec = UPDATE_SPECS["chip"]
    after, claimed = 0, 0
    started = time.perf_counter()
    while claimed < limit:
        rows = await claimer.claim(spec, limit=1, after=after)
        if not rows:
            break
        after, claimed = int(rows[0]["id"]), claimed + 1
        await claimer.release(spec, rows[0]["id"])
    return (time.perf_counter() - started) * 1000 / max(1, claimed)


async def console_figures(db: Database, settings: Settings) -> dict[str, float]:
    """The console over real HTTP on 127.0.0.1: a logged-in viewer's overview and partials."""
    await add_user(db, "scale", "viewer", "correct horse battery")
    sessions = Sessions(db, await console_key(db), 1.0)
    cookie, _ = await sessions.create("scale", "viewer", "127.0.0.1")
    app = console_app.make_app(db, sessions, await TextLimits.read(db), log, settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as http:

            async def get(path: str) -> None:
                async with http.get(f"http://127.0.0.1:{port}{path}", allow_redirects=False) as r:
                    if r.status != 200:
                        raise RuntimeError(f"bench.scale: console {path} answered {r.status}")
                    await r.read()

            return {
                "console overview": await _median_ms(lambda: get("/"), 5),
                "console /partials/clients": await _median_ms(lambda: get("/partials/clients"), 9),
                "console /partials/pipelines": await _median_ms(lambda: get("/partials/pipelines"), 9),
            }
    finally:
        await runner.cleanup()


async def loader_queue(dbs: Databases) -> dict[str, float]:
    values = {
        **configs.defaults("scale"),
        "dvo_label": "scale",
        "batch_types": "P2",
        "min_ra": 0.0,
        "max_ra": 360.0,
        "min_dec": -90.0,
        "max_dec": 90.0,
    }
    await configs.save(dbs.ipptopsps, "scale", values)
    first = await _median_ms(lambda: queue(dbs, "scale", 3), 1)
    again = await _median_ms(lambda: queue(dbs, "scale", 3), 1)
    return {"loader queue (first)": first, "loader queue (again)": again}


async def measure_size(components: int) -> dict[str, float]:
    """Every figure of the curve at one size, on a database of its own."""
    shape = Shape(components)
    with tempfile.TemporaryDirectory(prefix="ipp-scale-") as tmp:
        async with bench_database("ipp_bench_scale") as (settings, db):
            filled_s = await fill(db, shape, Path(tmp))
            total = int(await db.fetch_val(B.scale_rows))
            print(f"scale: {total} component rows, {shape.exposures} exposures, filled in {filled_s:.1f} s")
            dbs = Databases.single(db)
            got = {
                "cleanup_pending_labels": await _median_ms(
                    lambda: db.fetch_all(Q.cleanup_pending_labels), 15
                ),
                "dist candidates (first)": await _median_ms(lambda: _candidates(db, 1), 9),
                "dist candidates (1000)": await _median_ms(lambda: _candidates(db, 1000), 9),
                "ippctl runs list --label --limit 5": await _median_ms(
                    lambda: runs.list_runs(db, "chip", label="scale.3", limit=5), 9
                ),
                "ippctl runs list --label": await _median_ms(
                    lambda: runs.list_runs(db, "chip", label="scale.3", limit=1000), 5
                ),
                "update claim": await update_claims(db, CLAIMS),
                "cleanup claim + finish": await cleanup_claims(db, CLAIMS),
                "metrics pass (database)": await _median_ms(lambda: _metrics_pass(dbs), 3),
                "storage audit": await _median_ms(lambda: Storage(db).audit(), 1),
            }
            got.update(await console_figures(db, settings))
            got.update(await loader_queue(dbs))
            pool_mb = float(await db.fetch_val(B.scale_buffer_pool_mb))
            return {"components": float(total), "buffer_pool_mb": pool_mb, **got}


async def _candidates(db: Database, limit: int) -> None:
    """The dist server's query for a standing target's runs (it asks for 1000 at a time)."""
    await db.fetch_all(Q.dist_candidates_chip, dist_group="scale", product="scale", clean=0, limit=limit)


async def _metrics_pass(dbs: Databases) -> None:
    """The metrics agent's own pass over the database (sampling and recording)."""
    summary, taken, _ = await snapshot(dbs, "all")
    await metrics.record(dbs.ipptopsps, taken, summary.taken_at)


# -- the verdict ---------------------------------------------------------------------------


def figures(curve: list[dict[str, float]]) -> list[Figure]:
    """Per item: the largest size against the smallest, within 2x. Per pass: the growth
    exponent (cost ~ rows^k) from the smallest size to the largest, k <= 1.1."""
    small, large = curve[0], curve[-1]
    grow = large["components"] / small["components"]
    out = []
    for m in MEASURES:
        a, b = small[m.name], large[m.name]
        span = f"{_power(small['components'])} -> {_power(large['components'])} rows"
        if m.per == "item":
            ok = b <= 2 * a
            target = "<= 2x"
            if m.name.startswith("console /partials"):
                ok = ok and b < REFRESH_LIMIT_MS
                target = f"<= 2x and < {REFRESH_LIMIT_MS:.0f} ms"
            out.append(Figure(f"scale: {m.name} ({span})", b, a, "ms", ANCHOR, target, ok))
        else:
            k = math.log(max(b, 1e-6) / max(a, 1e-6)) / math.log(grow)
            out.append(
                Figure(
                    f"scale: {m.name} ({span})", b, a, "ms", ANCHOR, "growth k <= 1.1",
                    k <= 1.1, f"cost grows as rows^{k:.2f}",
                )
            )  # fmt: skip
    return out


def _power(n: float) -> str:
    return f"10^{round(math.log10(n))}" if n > 0 else "0"


def write_curve(curve: list[dict[str, float]]) -> Path:
    """bench/results/scale.md (a row per size), scale.json and scale.png."""
    import json

    RESULTS.mkdir(exist_ok=True)
    header = ["component rows", *[m.name for m in MEASURES]]
    lines = [
        "# Cost against the size of the database (ms)",
        "",
        f"Machine: {machine()}; InnoDB buffer pool {curve[-1].get('buffer_pool_mb', 0):.0f} MB",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for point in curve:
        cells = [f"{int(point['components']):,}", *[f"{point[m.name]:.1f}" for m in MEASURES]]
        lines.append("| " + " | ".join(cells) + " |")
    path = RESULTS / "scale.md"
    path.write_text("\n".join(lines) + "\n")
    (RESULTS / "scale.json").write_text(json.dumps(curve, indent=2))
    _plot(curve, RESULTS / "scale.png")
    return path


def _plot(curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    x = [p["components"] for p in curve]
    for ax, per in zip(axes, ("item", "pass"), strict=True):
        for m in MEASURES:
            if m.per == per:
                ax.plot(x, [p[m.name] for p in curve], marker="o", label=m.name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("component rows")
        ax.set_ylabel("ms")
        ax.set_title(f"per {per}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def measure(sizes: tuple[int, ...] = SIZES) -> list[Figure]:
    curve = [await measure_size(n) for n in sizes]
    write_curve(curve)
    return figures(curve)


def main() -> int:
    from bench.common import write_results

    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument(
        "--large", action="store_true", help="also 10^7 component rows (about 10 minutes more)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="component rows to fill, smallest first")
    args = parser.parse_args()
    sizes = tuple(args.sizes) if args.sizes else LARGE if args.large else SIZES
    if len(sizes) < 2 or list(sizes) != sorted(set(sizes)) or sizes[0] < 1000:
        parser.error(f"--sizes: at least two sizes of 1000 rows or more, smallest first (got {list(sizes)})")
    found = asyncio.run(measure(sizes))
    path = write_results(found, stem="scale_summary")
    print((RESULTS / "scale.md").read_text())
    print(path.read_text())
    return 0 if all(f.ok for f in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
