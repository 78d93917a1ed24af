"""The console's audit: every write (who, what, its parameters, from where, the result) is a
row of console_audit and a ``console_action`` log event."""

from __future__ import annotations

import json
from typing import Any

from shared.db.columns import TextLimits
from shared.db.database import Database, Row
from shared.db.queries import Q


async def record(
    db: Database,
    limits: TextLimits,
    log: Any,
    *,
    user: str | None,
    action: str,
    params: dict[str, Any],
    remote: str | None,
    ok: bool,
    result: str,
) -> None:
    text = json.dumps(params, sort_keys=True, default=str)
    await db.execute(
        Q.console_audit_add,
        user=user if user is None else limits.fit("console_audit", "user", user),
        action=limits.fit("console_audit", "action", action),  # a name from a URL may be long
        params=limits.fit("console_audit", "params", text),
        remote=remote,
        ok=int(ok),
        result=limits.fit("console_audit", "result", result),
    )
    (log.info if ok else log.warning)(
        "console_action", user=user, action=action, params=params, remote=remote, ok=ok, result=result
    )


async def recent(db: Database, limit: int = 200) -> list[Row]:
    return await db.fetch_all(Q.console_audit_recent, limit=limit)
