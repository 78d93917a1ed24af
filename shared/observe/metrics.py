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
from shared.processing.stages import STAGES, stage_query
from shared.psps import BATCH_TYPES

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


def format_summary(summary: LoadingSummary) -> str:
    """The operators' two tables: rates per batch type, then the life cycle's outcomes."""
    who = ", ".join(summary.configs) or "no configs"
    lines = [f"PSPS loading summary: {who} at {_when(summary.taken_at)} UTC", ""]
    lines.append(
        f"{'type':<5}{'per hour':>10}{'last 24 h':>11}{'per day (week)':>16}"
        f"{'batches':>10}{'detections':>14}  last published"
    )
    for kind in BATCH_TYPES:
        r = summary.rates.get(kind)
        if r is None:
            continue
        lines.append(
            f"{kind:<5}{r.last_hour:>10}{r.last_day:>11}{r.per_day_this_week:>16.1f}"
            f"{r.batches:>10}{r.detections:>14,}  {_when(r.last_published)}"
        )
    if not summary.rates:
        lines.append("(no batches yet)")
    lines += ["", f"{'stage':<21}{'pending':>10}{'succeeded':>11}{'failed':>9}"]
    for stage in BATCH_STAGES:
        counts = summary.stages.get(stage, {})
        lines.append(
            f"{stage:<21}{counts.get('pending', 0):>10}"
            f"{counts.get('succeeded', 0):>11}{counts.get('failed', 0):>9}"
        )
    return "\n".join(lines) + "\n"


# -- the life-cycle side -------------------------------------------------------------------


@dataclass
class Lifecycle:
    runs: dict[str, dict[str, int]]
    filesets: dict[str, int]
    imported: dict[str, int]
    counters: dict[str, int]
    items: dict[tuple[str, str, str], int]


async def lifecycle(db: Database) -> Lifecycle:
    runs: dict[str, dict[str, int]] = {}
    for stage in RUN_STAGES:
        rows = await db.fetch_all(stage_query("metrics_runs", stage))
        runs[stage] = {str(r["state"]): int(r["n"]) for r in rows}
    filesets = {f"{r['product']}": int(r["n"]) for r in await db.fetch_all(Q.metrics_filesets)}
    imported = {str(r["state"]): int(r["n"]) for r in await db.fetch_all(Q.metrics_imported)}
    counters = {str(r["name"]): int(r["value"]) for r in await db.fetch_all(Q.metrics_counters)}
    items = {
        (str(r["config"]), str(r["type"]), str(r["state"])): int(r["n"])
        for r in await db.fetch_all(Q.metrics_items_by_state)
    }
    return Lifecycle(runs, filesets, imported, counters, items)


async def clients(db: Database) -> list[Row]:
    return await db.fetch_all(Q.metrics_clients)


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
