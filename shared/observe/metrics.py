"""What the system has done and is doing, as numbers: the PSPS loading summary of REFERENCE 11,
the life-cycle counts (runs by stage and state, filesets, the agents' totals), the clients, and
the samples kept as time series. ``ippctl metrics``, the metrics agent's status page and its
``/metrics`` all read through here, so they always agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.db.database import Database, Row
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.processing.stages import STAGES

#: The batch life cycle, in order (REFERENCE 11).
BATCH_STAGES = (
    "processed",
    "loaded_to_datastore",
    "loaded_to_odm",
    "merge_worthy",
    "merged",
    "deleted_datastore",
    "deleted_dxlayer",
    "deleted_local",
)
OUTCOMES = ("pending", "succeeded", "failed")
RUN_STAGES = tuple(name for name, s in STAGES.items() if s.lifecycle)


@dataclass
class TypeRates:
    last_hour: int = 0
    last_day: int = 0
    last_week: int = 0
    detections: int = 0
    batches: int = 0
    last_published: datetime | None = None

    @property
    def per_day_this_week(self) -> float:
        return self.last_week / 7.0


@dataclass
class LoadingSummary:
    """One config's (or every config's) loading summary."""

    configs: list[str]
    taken_at: datetime
    rates: dict[str, TypeRates] = field(default_factory=dict)
    #: stage -> outcome -> batches
    stages: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (config, type, stage, outcome) -> batches, for the time series and /metrics
    detail: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "configs": self.configs,
            "taken_at": self.taken_at.isoformat() + "Z",
            "types": {
                t: {
                    "batches_last_hour": r.last_hour,
                    "batches_last_24h": r.last_day,
                    "batches_per_day_this_week": round(r.per_day_this_week, 2),
                    "batches": r.batches,
                    "detections": r.detections,
                    "last_published": r.last_published.isoformat() + "Z" if r.last_published else None,
                }
                for t, r in self.rates.items()
            },
            "stages": self.stages,
        }


async def config_names(db: Database, which: str) -> list[str]:
    if which != "all":
        return [which]
    return [str(r["name"]) for r in await db.fetch_all(Q.metrics_config_names)]


def _add_counts(summary: LoadingSummary, rows: list[Row]) -> None:
    for row in rows:
        n, stage, outcome = int(row["batches"]), str(row["stage"]), str(row["outcome"])
        if stage not in summary.stages:
            continue
        summary.stages[stage][outcome] = summary.stages[stage].get(outcome, 0) + n
        summary.detail[(str(row["config"]), str(row["type"]), stage, outcome)] = n
        if stage == "processed":
            summary.rates.setdefault(str(row["type"]), TypeRates()).batches += n


def _add_hours(summary: LoadingSummary, rows: list[Row]) -> None:
    for row in rows:
        rates = summary.rates.setdefault(str(row["type"]), TypeRates())
        rates.last_day += int(row["last_day"] or 0)
        rates.last_week += int(row["last_week"] or 0)
        rates.detections += int(row["detections"] or 0)
        last = row["last_published"]
        if last and (rates.last_published is None or last > rates.last_published):
            rates.last_published = last


async def loading_summary(db: Database, which: str) -> LoadingSummary:
    """The loading summary of one config or ``all``, from the tables the psps_batch triggers
    keep (a few hundred rows however many batches there are) and the last hour's batches."""
    names = await config_names(db, which)
    summary = LoadingSummary(names, datetime.now(UTC).replace(tzinfo=None))
    summary.stages = {s: dict.fromkeys(OUTCOMES, 0) for s in BATCH_STAGES}
    if not names:
        return summary
    _add_counts(summary, await db.fetch_all(Q.metrics_batch_counts, configs=tuple(names)))
    _add_hours(summary, await db.fetch_all(Q.metrics_batch_hours, configs=tuple(names)))
    for row in await db.fetch_all(Q.metrics_batch_last_hour, configs=tuple(names)):
        summary.rates.setdefault(str(row["type"]), TypeRates()).last_hour += int(row["n"])
    return summary


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


# -- seed 003's report ---------------------------------------------------------------------

#: The types the report shows (the IN batch is one per config and has no place in DVO).
REPORT_TYPES = ("P2", "ST", "OB")


@dataclass(frozen=True)
class TypeReport:
    """One batch type of one config: its rates, its items (the "DVO" column: what the queue
    took from DVO and addRun) and its batches per life-cycle stage and outcome."""

    kind: str
    rates: TypeRates
    dvo: int
    stages: dict[str, dict[str, int]]


@dataclass(frozen=True)
class ConfigReport:
    name: str
    taken_at: datetime
    epoch: datetime | None
    dvo_label: str
    types: list[TypeReport]


async def config_reports(db: Database, which: str) -> list[ConfigReport]:
    """metrics.py's summary for one config, or one per config for ``all``."""
    items: dict[tuple[str, str], int] = defaultdict(int)
    for row in await db.fetch_all(Q.metrics_items_by_state):
        items[(str(row["config"]), str(row["type"]))] += int(row["n"])
    reports = []
    for name in await config_names(db, which):
        cfg = await db.fetch_one(Q.psps_config_get, name=name)
        summary = await loading_summary(db, name)
        types = []
        for kind in REPORT_TYPES:
            stages = {
                stage: {o: summary.detail.get((name, kind, stage, o), 0) for o in OUTCOMES}
                for stage in BATCH_STAGES
            }
            rates = summary.rates.get(kind)
            if rates is None and not items.get((name, kind)):
                continue
            types.append(TypeReport(kind, rates or TypeRates(), items.get((name, kind), 0), stages))
        reports.append(
            ConfigReport(
                name,
                summary.taken_at,
                cfg["epoch"] if cfg else None,
                str(cfg["dvo_label"]) if cfg else "",
                types,
            )
        )
    return reports


def _ago(value: datetime | None, now: datetime) -> str:
    """ "4.6 hours ago", as metrics.py wrote it."""
    if value is None:
        return "never"
    return f"{max(0.0, (now - value).total_seconds()) / 3600:.1f} hours ago"


def _day(value: datetime | None) -> str:
    if value is None:
        return "-"
    midnight = value == datetime(value.year, value.month, value.day)
    return value.strftime("%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S")


RATE_COLUMNS = (
    ("batches per hour", 18),
    ("last 24 hours", 15),
    ("per day this week", 19),
    ("total detections", 18),
    ("last published", 16),
)
STAGE_WIDTH = 19


def _border(widths: list[int]) -> str:
    return "+" + "+".join("-" * w for w in widths) + "+"


def _row(cells: list[str]) -> str:
    return "|" + "|".join(cells) + "|"


def _pend_succ_fail(counts: dict[str, int]) -> str:
    """`` Pend  Succ  Fail  `` laid out as metrics.py did: a zero is left blank."""
    shown = [str(counts[o]) if counts.get(o) else "" for o in OUTCOMES]
    return f"{shown[0]:>5}{shown[1]:>6}{shown[2]:>6}  "


def format_report(report: ConfigReport) -> str:
    """The summary exactly as seed 003 shows metrics.py's: the title, Time now, Loading
    epoch and DVO label, then the two bordered tables (rates per type; the DVO count and
    Pend/Succ/Fail of each of the eight stages per type)."""
    lines = ["                ippToPsps loading summary", ""]
    lines.append(f"{'Time now':<40}{report.taken_at:%Y-%m-%d %H:%M:%S}")
    lines.append(f"{'Loading epoch':<40}{_day(report.epoch)}")
    lines.append(f"{'DVO label':<40}{report.dvo_label}")
    lines.append("")
    widths = [4] + [w for _, w in RATE_COLUMNS]
    lines.append(_border(widths))
    lines.append(_row(["Type"] + [f" {label:<{w - 1}}"[:w] for label, w in RATE_COLUMNS]))
    lines.append(_border(widths))
    for t in report.types:
        r = t.rates
        values = [
            f"{float(r.last_hour):.1f}",
            str(r.last_day),
            f"{r.per_day_this_week:.1f}",
            str(r.detections),
            _ago(r.last_published, report.taken_at),
        ]
        lines.append(
            _row([f" {t.kind} "] + [f"{v:>{w - 1}} " for v, (_, w) in zip(values, RATE_COLUMNS, strict=True)])
        )
    lines.append(_border(widths))
    lines.append("")
    widths = [4, 7] + [STAGE_WIDTH] * len(BATCH_STAGES)
    lines.append(_border(widths))
    lines.append(_row(["Type", "  DVO  "] + [f"{_stage_label(s):>{STAGE_WIDTH}}" for s in BATCH_STAGES]))
    lines.append(_row(["    ", "       "] + [" Pend  Succ  Fail  "] * len(BATCH_STAGES)))
    lines.append(_border(widths))
    for t in report.types:
        cells = [f" {t.kind} ", f"{t.dvo:>6} "] + [_pend_succ_fail(t.stages[s]) for s in BATCH_STAGES]
        lines.append(_row(cells))
    lines.append(_border(widths))
    return "\n".join(lines) + "\n"


def _stage_label(stage: str) -> str:
    return "loaded_to_ODM" if stage == "loaded_to_odm" else stage


# -- the life-cycle side -------------------------------------------------------------------


@dataclass
class Lifecycle:
    runs: dict[str, dict[str, int]]
    filesets: dict[str, int]
    imported: dict[str, int]
    counters: dict[str, int]
    items: dict[tuple[str, str, str], int]


async def lifecycle(dbs: Databases) -> Lifecycle:
    """Runs, filesets and imports (the processing database), the agents' totals (every
    database agents register in) and the queued items (the ippToPsps database)."""
    reads = dbs.reads
    runs: dict[str, dict[str, int]] = {stage: {} for stage in RUN_STAGES}
    for r in await reads.fetch_all(Q.metrics_runs):
        if r["stage"] in runs:
            runs[str(r["stage"])][str(r["state"])] = int(r["n"])
    filesets = {f"{r['product']}": int(r["n"]) for r in await reads.fetch_all(Q.metrics_filesets)}
    imported = {str(r["state"]): int(r["n"]) for r in await reads.fetch_all(Q.metrics_imported)}
    counters: dict[str, int] = defaultdict(int)
    for db in dbs.homes():
        for r in await db.fetch_all(Q.metrics_counters):
            counters[str(r["name"])] += int(r["value"])
    items = {
        (str(r["config"]), str(r["type"]), str(r["state"])): int(r["n"])
        for r in await dbs.ipptopsps.fetch_all(Q.metrics_items_by_state)
    }
    return Lifecycle(runs, filesets, imported, dict(counters), items)


async def clients(dbs: Databases) -> list[Row]:
    """The clients of every database agents register in, by agent, host and pid."""
    rows = [r for db in dbs.homes() for r in await db.fetch_all(Q.metrics_clients)]
    return sorted(rows, key=lambda r: (r["agent"], r["host"], r["pid"]))


# -- samples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float

    @property
    def label_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels)


def samples(summary: LoadingSummary, life: Lifecycle, client_rows: list[Row]) -> list[Sample]:
    """Every number worth a time series (zero counts left out)."""
    out = [
        Sample("psps_batches", (("config", c), ("type", t), ("stage", s), ("outcome", o)), n)
        for (c, t, s, o), n in sorted(summary.detail.items())
        if n
    ]
    out += [Sample("psps_detections", (("type", t),), r.detections) for t, r in sorted(summary.rates.items())]
    out += [
        Sample("psps_items", (("config", c), ("type", t), ("state", s)), n)
        for (c, t, s), n in sorted(life.items.items())
        if n
    ]
    out += [
        Sample("runs", (("stage", st), ("state", s)), n)
        for st, states in life.runs.items()
        for s, n in sorted(states.items())
        if n
    ]
    out += [Sample("filesets", (("product", p),), n) for p, n in sorted(life.filesets.items())]
    out += [Sample("filesets_imported", (("state", s),), n) for s, n in sorted(life.imported.items())]
    out += [Sample("agent_total", (("name", k),), v) for k, v in sorted(life.counters.items())]
    by_status: dict[tuple[str, str], int] = defaultdict(int)
    for c in client_rows:
        by_status[(str(c["agent"]), str(c["status"]))] += 1
    out += [Sample("clients", (("agent", a), ("status", s)), n) for (a, s), n in sorted(by_status.items())]
    return out


async def record(db: Database, taken: list[Sample], when: datetime) -> None:
    for s in taken:
        await db.execute(
            Q.metrics_sample_add, taken_at=when, metric=s.metric, labels=s.label_text, value=s.value
        )


async def prune(db: Database, keep_days: float) -> int:
    removed = 0
    while True:
        n = await db.execute(Q.metrics_samples_prune, keep_s=int(keep_days * 86400))
        removed += n
        if n < 10000:
            return removed


async def series(db: Database, metric: str, since_s: float) -> dict[str, list[tuple[datetime, float]]]:
    """One metric's samples by label set, oldest first."""
    found: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for row in await db.fetch_all(Q.metrics_series, metric=metric, since_s=int(since_s)):
        found[str(row["labels"])].append((row["taken_at"], float(row["value"])))
    return dict(found)
