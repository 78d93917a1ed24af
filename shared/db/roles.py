"""The databases of a site, by role: the processing database and the ippToPsps database.

Seed 003 keeps ippToPsps' tracking in "the ippToPsps database" of its own; "certain ippToPsps
programs also access the IPP gpc1 database". With ``ipptopsps_dsn`` set, the loading side's
agents (loader, odm_poller, batch_cleaner, metrics) register, take their flags and keep their
tables there, read the processing database on read-only sessions, and write in it only their
DataStore publication (storage objects and filesets, as the IPP's DataStore tools write the
DataStore's own tables). Without it every role is the one processing database, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shared.core.errors import DbError
from shared.core.settings import Settings
from shared.db.database import Database
from shared.db.schema import IPPTOPSPS, PROCESSING, check_schema


@dataclass(frozen=True)
class Databases:
    """The pools one program works with. With one database they are one pool."""

    #: The processing database, read-write: the processing side's home, and the loading
    #: side's DataStore publication.
    processing: Database
    #: The processing database for reading only (a read-only pool when the loading side has
    #: a database of its own).
    reads: Database
    #: The ippToPsps database, when this program opened it.
    _ipptopsps: Database | None

    @property
    def separate(self) -> bool:
        """Whether the loading side's tables are in a database of their own."""
        return self._ipptopsps is not None and self._ipptopsps is not self.processing

    @property
    def ipptopsps(self) -> Database:
        """The ippToPsps database (the processing one when there is one database)."""
        if self._ipptopsps is None:
            raise DbError("this program did not open the ippToPsps database (ipptopsps_dsn)")
        return self._ipptopsps

    def homes(self) -> list[Database]:
        """Every database agents register in that this program opened (clients, counters)."""
        return [self.processing, self.ipptopsps] if self.separate else [self.processing]

    def home(self, role: str) -> Database:
        """Where a program of ``role`` registers, takes its flags and keeps its tables."""
        return self.ipptopsps if role == IPPTOPSPS else self.processing

    @classmethod
    def single(cls, db: Database) -> Databases:
        """Every role on one database (a site without ``ipptopsps_dsn``; tests)."""
        return cls(db, db, db)


@contextlib.asynccontextmanager
async def opened(
    settings: Settings,
    role: str = PROCESSING,
    *,
    with_ipptopsps: bool = False,
    wait_s: float | None = None,
    pool_size: int | None = None,
    sync_wait: int | None = None,
    check: bool = True,
) -> AsyncIterator[Databases]:
    """Open the pools a program of ``role`` needs (``with_ipptopsps``: also the ippToPsps
    database for a processing-side program, the console), check each one's schema and role,
    and close them all at the end."""

    async with contextlib.AsyncExitStack() as stack:

        async def connect(dsn: str | None = None, read_only: bool = False) -> Database:
            db = await Database.connect(
                settings, dsn, wait_s=wait_s, pool_size=pool_size, sync_wait=sync_wait, read_only=read_only
            )
            stack.push_async_callback(db.close)
            return db

        processing = await connect()
        if not settings.ipptopsps_separate():
            if check:
                await check_schema(processing, role)
            yield Databases.single(processing)
            return
        reads = processing
        ipptopsps: Database | None = None
        if role == IPPTOPSPS or with_ipptopsps:
            ipptopsps = await connect(settings.ipptopsps_effective_dsn())
        if role == IPPTOPSPS:
            reads = await connect(read_only=True)
        if check:
            await check_schema(processing, PROCESSING)
            if ipptopsps is not None:
                await check_schema(ipptopsps, IPPTOPSPS)
        yield Databases(processing, reads, ipptopsps)
