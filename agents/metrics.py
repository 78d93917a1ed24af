"""Metrics: the numbers of the whole system, kept over time and shown to operators.

Every ``metrics_interval_s`` the agent takes the loading summary of its configs (``--config
NAME|all``), the life-cycle counts (runs by stage and state, filesets shipped and imported, the
agents' totals such as bytes freed and updates served) and the clients, stores them as samples
(kept ``metrics_retention_days``) and redraws the plots into ``metrics_plot_dir`` (sky density
of pending items per batch type, progress per config, the life-cycle side), keeping the newest
of each. While it runs it serves, read-only, on ``metrics_host:metrics_port`` (127.0.0.1 by
default): ``/`` a status page (clients and heartbeats, pipelines, the loading summaries, the
plots) and ``/metrics`` in the Prometheus text format.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from shared.core.errors import IppError
from shared.db.database import Database, Row
from shared.db.roles import Databases
from shared.db.schema import IPPTOPSPS
from shared.observe import czartool, metrics, plots
from shared.psps import BATCH_TYPES
from shared.runtime.agent import AgentContext
from shared.runtime.httpserver import ServerLimits, security_headers, serving

NAME = "metrics"
#: Started with --config NAME or --config all, never without (shared.runtime.agent.AgentSpec).
PER_CONFIG = True
#: Registers and keeps its tables in the ippToPsps database (shared.db.roles).
DATABASE = IPPTOPSPS
DB_KEY: web.AppKey[Databases] = web.AppKey("db", Databases)
DIR_KEY: web.AppKey[Path] = web.AppKey("plots", Path)
WHICH_KEY: web.AppKey[str] = web.AppKey("which", str)
HELP = {
    "psps_batches": "PSPS batches by config, type, life-cycle stage and outcome",
    "psps_detections": "detections in PSPS batches, by type",
    "psps_items": "queued PSPS items by config, type and state",
    "runs": "processing runs by stage and state",
    "filesets": "DataStore filesets by product",
    "filesets_imported": "filesets imported from other sites, by state",
    "agent_total": "agents' counters added up over every process (e.g. cleanup.bytes_freed)",
    "clients": "agent processes by agent and status (seen in the last hour)",
}


# -- the agent -----------------------------------------------------------------------------


async def run_once(ctx: AgentContext) -> int:
    """Take a sample (and redraw) when the interval has passed; always idle afterwards."""
    last = ctx.resources.get("last_sample_at")
    # with --every HOURS the runtime spaces the passes itself
    interval = 0.0 if getattr(ctx.args, "every", None) else ctx.settings.metrics_interval_s
    if last is not None and time.monotonic() - last < interval:
        return 0
    ctx.resources["last_sample_at"] = time.monotonic()
    started = time.monotonic()
    summary, taken, _ = await snapshot(ctx.dbs, ctx.config)
    await metrics.record(ctx.db, taken, summary.taken_at)
    pruned = await metrics.prune(ctx.db, ctx.settings.metrics_retention_days)
    try:
        written = await draw(ctx, summary.configs)
    except (IppError, OSError, ValueError) as exc:
        ctx.log.error("plots_failed", error=str(exc))
        ctx.item_failed(f"plots: {exc}")
        written = []
    czar_rows = await _to_czartool(ctx)
    ctx.count("samples", len(taken))
    ctx.log.info(
        "metrics_sampled",
        samples=len(taken),
        pruned=pruned,
        plots=len(written),
        czartool_rows=czar_rows,
        duration_s=round(time.monotonic() - started, 3),
    )
    return 0


async def _to_czartool(ctx: AgentContext) -> int | None:
    """This sample's loading summary into the czartool database, if there is one; a failure
    there is logged and leaves the site's own samples alone."""
    czar: Database | None = ctx.resources.get("czartool")
    if czar is None:
        return None
    try:
        return await czartool.record(czar, await metrics.config_reports(ctx.db, ctx.config))
    except IppError as exc:
        ctx.log.error("czartool_write_failed", error=str(exc))
        ctx.item_failed(f"czartool: {exc}")
        return 0


# -- one snapshot -------------------------------------------------------------------------


async def snapshot(
    dbs: Databases, which: str
) -> tuple[metrics.LoadingSummary, list[metrics.Sample], list[Row]]:
    summary = await metrics.loading_summary(dbs.ipptopsps, which)
    life = await metrics.lifecycle(dbs)
    client_rows = await metrics.clients(dbs)
    return summary, metrics.samples(summary, life, client_rows), client_rows


class Snapshot:
    """A prometheus_client collector over samples already read from the database."""

    def __init__(self, taken: list[metrics.Sample], client_rows: list[Row]) -> None:
        self.taken = taken
        self.client_rows = client_rows

    def collect(self) -> Iterator[Metric]:
        by_metric: dict[str, list[metrics.Sample]] = defaultdict(list)
        for s in self.taken:
            by_metric[s.metric].append(s)
        for name, found in sorted(by_metric.items()):
            family = GaugeMetricFamily(
                f"ipp_{name}", HELP.get(name, name), labels=[k for k, _ in found[0].labels]
            )
            for s in found:
                family.add_metric([v for _, v in s.labels], s.value)
            yield family
        age = GaugeMetricFamily(
            "ipp_client_heartbeat_age_seconds",
            "seconds since each agent process last wrote its heartbeat",
            labels=["agent", "host", "pid", "config", "status"],
        )
        for c in self.client_rows:
            age.add_metric(
                [str(c["agent"]), str(c["host"]), str(c["pid"]), str(c["config"]), str(c["status"])],
                float(c["heartbeat_age_s"] or 0),
            )
        yield age


def prometheus_text(taken: list[metrics.Sample], client_rows: list[Row]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(taken, client_rows))
    return generate_latest(registry)


# -- the web pages -------------------------------------------------------------------------


async def prometheus(request: web.Request) -> web.Response:
    _, taken, client_rows = await snapshot(request.app[DB_KEY], request.app[WHICH_KEY])
    return web.Response(
        body=prometheus_text(taken, client_rows), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _clients_html(client_rows: list[Row]) -> str:
    return _table(
        [
            "agent",
            "host",
            "pid",
            "config",
            "status",
            "heartbeat age (s)",
            "current item",
            "done",
            "failed",
            "last error",
        ],
        [
            [
                c["agent"],
                c["host"],
                c["pid"],
                c["config"] or "-",
                c["status"],
                f"{float(c['heartbeat_age_s'] or 0):.1f}",
                c["current_item"] or "-",
                c["items_done"],
                c["items_failed"],
                (c["last_error"] or "")[:120],
            ]
            for c in client_rows
        ],
    )


def _pipelines_html(life: metrics.Lifecycle) -> str:
    states = sorted({s for counts in life.runs.values() for s in counts})
    runs = _table(
        ["stage", *states], [[st, *(counts.get(s, 0) for s in states)] for st, counts in life.runs.items()]
    )
    files = _table(["product", "filesets"], [[p, n] for p, n in sorted(life.filesets.items())])
    totals = _table(["total", "value"], [[k, v] for k, v in sorted(life.counters.items())])
    return f"<h2>Runs by stage and state</h2>{runs}<h2>DataStore</h2>{files}<h2>Agent totals</h2>{totals}"


def newest_plots(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.glob("*.png") if not p.name.startswith("."))


async def status_page(request: web.Request) -> web.Response:
    dbs = request.app[DB_KEY]
    reports = await metrics.config_reports(dbs.ipptopsps, request.app[WHICH_KEY])
    life = await metrics.lifecycle(dbs)
    client_rows = await metrics.clients(dbs)
    pngs = await asyncio.to_thread(newest_plots, request.app[DIR_KEY])
    images = "".join(
        f'<figure><img src="/plots/{html.escape(n)}" alt="{html.escape(n)}">'
        f"<figcaption>{html.escape(n)}</figcaption></figure>"
        for n in pngs
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="30"><title>IPP status</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}pre{{background:#f6f6f6;
padding:.5em}}img{{max-width:48%}}</style></head><body>
<h1>IPP status</h1><p>{html.escape(datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))} UTC,
read-only; <a href="/metrics">/metrics</a></p>
<h2>Clients and heartbeats</h2>{_clients_html(client_rows)}
{_pipelines_html(life)}
<h2>PSPS loading</h2><pre>{html.escape(chr(10).join(map(metrics.format_report, reports)))}</pre>
<h2>Plots</h2>{images or "<p>no plots yet</p>"}
</body></html>"""
    return web.Response(text=page, content_type="text/html")


async def plot_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in await asyncio.to_thread(newest_plots, request.app[DIR_KEY]):
        raise web.HTTPNotFound(text=f"no plot {name[:80]!r}\n")
    return web.FileResponse(request.app[DIR_KEY] / name)


def make_app(dbs: Databases, plot_dir: Path, which: str) -> web.Application:
    app = web.Application(middlewares=[security_headers])
    app[DB_KEY], app[DIR_KEY], app[WHICH_KEY] = dbs, plot_dir, which
    app.router.add_get("/", status_page)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/plots/{name}", plot_file)
    return app


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    """Serve the status page (and hold the czartool database, if set) while the agent runs."""
    s = ctx.settings
    async with (
        _czartool(ctx),
        serving(
            make_app(ctx.dbs, s.plot_dir(), ctx.config),
            s.metrics_host,
            s.metrics_port,
            ServerLimits.from_settings(s),
            ctx.log,
            "status",
        ),
    ):
        ctx.log.info("status_page_listening", url=f"http://{s.metrics_host}:{s.metrics_port}/")
        yield


@asynccontextmanager
async def _czartool(ctx: AgentContext) -> AsyncIterator[None]:
    """The czartool database (``czartool_dsn``) with its tables, for as long as the agent runs."""
    if not ctx.settings.czartool_dsn:
        yield
        return
    czar = await Database.connect(ctx.settings, ctx.settings.czartool_dsn, pool_size=2)
    try:
        await czartool.create_tables(czar)
        ctx.resources["czartool"] = czar
        ctx.log.info("czartool_connected", database=czar.dsn.display())
        yield
    finally:
        ctx.resources.pop("czartool", None)
        await czar.close()


# -- the sampling pass ---------------------------------------------------------------------


def keep_newest(directory: Path, names: list[str], written: list[Path]) -> int:
    """Remove every older plot of the kinds this agent draws (a density plot of a type with
    nothing pending any more goes too: it would show a sky that is no longer so)."""
    prefixes = (
        {"lifecycle_"} | {f"{n}_progress_" for n in names} | {f"{n}_{t}_" for n in names for t in BATCH_TYPES}
    )
    keep = {p.name for p in written}
    removed = 0
    for old in directory.glob("*.png"):
        if old.name not in keep and f"{plots.plot_kind(old.name)}_" in prefixes:
            old.unlink(missing_ok=True)
            removed += 1
    return removed


async def draw(ctx: AgentContext, names: list[str]) -> list[Path]:
    out = ctx.settings.plot_dir()
    written: list[Path] = []
    for name in names:
        written += await plots.density(ctx.db, name, out)
        written += await plots.progress(ctx.db, name, out)
    written += await plots.lifecycle(ctx.dbs, out)
    await asyncio.to_thread(keep_newest, out, names, written)
    return written
