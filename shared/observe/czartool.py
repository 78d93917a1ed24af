"""The czartool database: where the metrics agent stores ippToPsps' vital statistics as time
series (seed 003: metrics.py "inserting data into the czartool database"), per sample, config
and batch type, for the site's dashboards. Its tables are this project's own
(``sql/czartool_schema.sql``, docs/formats.md): the real czartool schema is not public.
"""

from __future__ import annotations

from pathlib import Path

from shared.db.database import Database, Tx
from shared.db.queries import Q
from shared.db.schema import Migration, apply_statements
from shared.observe.metrics import BATCH_STAGES, ConfigReport

SCHEMA = Path(__file__).resolve().parent / "sql" / "czartool_schema.sql"


async def create_tables(db: Database) -> None:
    """The tables, if the czartool database lacks them (``CREATE TABLE IF NOT EXISTS``)."""
    await apply_statements(db, Migration(0, "czartool", SCHEMA).statements(), name="czartool")


async def record(db: Database, reports: list[ConfigReport]) -> int:
    """One sample of every config's report, in one transaction; how many rows it wrote."""
    rates = [
        {
            "taken_at": r.taken_at,
            "config": r.name,
            "batch_type": t.kind,
            "batches_per_hour": float(t.rates.last_hour),
            "last_24_hours": t.rates.last_day,
            "per_day_this_week": round(t.rates.per_day_this_week, 3),
            "total_detections": t.rates.detections,
            "last_published": t.rates.last_published,
            "dvo": t.dvo,
        }
        for r in reports
        for t in r.types
    ]
    stages = [
        {
            "taken_at": r.taken_at,
            "config": r.name,
            "batch_type": t.kind,
            "stage": stage,
            **t.stages[stage],
        }
        for r in reports
        for t in r.types
        for stage in BATCH_STAGES
    ]

    async def write(tx: Tx) -> None:
        if rates:
            await tx.execute_many(Q.czartool_rates_add, rates)
        if stages:
            await tx.execute_many(Q.czartool_stages_add, stages)

    await db.transaction(write, name="czartool_record")
    return len(rates) + len(stages)
