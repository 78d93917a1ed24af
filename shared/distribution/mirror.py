"""Operators' actions at a mirror site: a failed fileset tried again now (``ippctl dist
retry`` and the console both call this)."""

from __future__ import annotations

from shared.db.database import Database
from shared.db.queries import Q
from shared.distribution.datastore import DataStoreError


async def retry_failed(db: Database, name: str, source: str | None = None) -> str:
    """Try a failed fileset again on the mirror's next pass, without waiting for its backoff."""
    if not await db.execute(Q.rc_retry_now, name=name, source=source):
        where = f" of source {source!r}" if source else ""
        raise DataStoreError(f"no failed fileset {name!r}{where} (ippctl dist failed lists them)")
    return f"fileset {name}: tried again on the next dist_client pass"
