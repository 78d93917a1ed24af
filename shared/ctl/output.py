"""What every ippctl command shares: connecting, JSON and table output, a database for the
length of one command."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared.core.cli import visible
from shared.core.settings import Settings
from shared.db.database import Database
from shared.db.roles import Databases, opened
from shared.db.schema import IPPTOPSPS


async def connect(settings: Settings) -> Database:
    """Connect for a command: fail at once (no reconnect wait) with a clear message. On a
    Galera cluster an operator's reads wait for what agents committed on other nodes."""
    return await Database.connect(settings, wait_s=0, pool_size=2, sync_wait=1)


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(data: Any) -> None:
    print(json.dumps(data, default=json_default, indent=2))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table; every cell made visible (a peer may have chosen it)."""
    cells = [[visible(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


async def with_db(settings: Settings, fn: Callable[[Database], Awaitable[int]]) -> int:
    db = await connect(settings)
    try:
        return await fn(db)
    finally:
        await db.close()


async def with_dbs(
    settings: Settings, fn: Callable[[Databases], Awaitable[int]], *, role: str = IPPTOPSPS
) -> int:
    """``fn`` given every database a command of ``role`` needs (the loading side's commands:
    the ippToPsps database, and the processing database for what they read or publish)."""
    async with opened(settings, role, wait_s=0, pool_size=2, sync_wait=1, check=False) as dbs:
        return await fn(dbs)


async def with_ipptopsps(settings: Settings, fn: Callable[[Database], Awaitable[int]]) -> int:
    """``fn`` given the ippToPsps database (the processing one when there is one database)."""
    return await with_dbs(settings, lambda dbs: fn(dbs.ipptopsps))
