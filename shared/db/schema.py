"""Schema migrations: ordered SQL files applied by ``ippctl db upgrade``.

Files are ``shared/db/sql/migrations/NNNN_<name>.sql``; the code's schema version is the highest
NNNN. ``dbversion`` records the version a database is at, and agents refuse to start when it
differs from the code's (:func:`check_schema`).

A site has one or two databases (seed 003 keeps ippToPsps' tables in a database of its own):
the processing database and, with ``ipptopsps_dsn``, the ippToPsps database. Each statement of
a migration belongs to a role: a ``-- role: processing|ipptopsps|both`` line starts the
statements of that role (until the next such line; a file begins as ``processing``). A database
holds the roles recorded in its ``dbrole`` table when it was made (a database made before
roles existed holds both) and is given only their statements, at the same version numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomysql
import pymysql

from shared.core.errors import DbError, SchemaMismatch
from shared.core.log import get_logger
from shared.core.settings import Dsn, Settings
from shared.db.database import Database, Tx
from shared.db.queries import Q

MIGRATION_DIR = Path(__file__).resolve().parent / "sql" / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql\Z")
_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}\Z")
_ROLE_LINE = re.compile(r"^--\s*role:\s*(\S+)\s*\Z")

#: The processing database's tables (the IPP's gpc1: runs, storage, DataStore, console) and
#: the ippToPsps database's (loading configs, queue, batches, metrics).
PROCESSING = "processing"
IPPTOPSPS = "ipptopsps"
ROLES = frozenset({PROCESSING, IPPTOPSPS})
_ROLE_OF_LINE = {PROCESSING: frozenset({PROCESSING}), IPPTOPSPS: frozenset({IPPTOPSPS}), "both": ROLES}

log = get_logger("schema")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self, roles: frozenset[str] = ROLES) -> list[str]:
        """The file's statements for a database of ``roles``; each ends with ';' at the end
        of a line. As in the mysql client, a ``DELIMITER $$`` line changes that terminator
        (for trigger bodies, whose statements end with ';') until ``DELIMITER ;``."""
        return [text for role, text in self._sections() if role & roles]

    def _sections(self) -> list[tuple[frozenset[str], str]]:
        statements: list[tuple[frozenset[str], str]] = []
        current: list[str] = []
        end = ";"
        role = _ROLE_OF_LINE[PROCESSING]
        for line in self.path.read_text().splitlines():
            marker = _ROLE_LINE.match(line.strip())
            if marker:
                if current or marker.group(1) not in _ROLE_OF_LINE:
                    raise ValueError(f"{self.path.name}: bad role line {line.strip()!r}")
                role = _ROLE_OF_LINE[marker.group(1)]
                continue
            if line.strip().startswith("--") or not line.strip():
                continue
            if line.strip().upper().startswith("DELIMITER "):
                if current:
                    raise ValueError(f"{self.path.name}: DELIMITER inside a statement")
                end = line.split(None, 1)[1].strip()
                continue
            current.append(line)
            if line.rstrip().endswith(end):
                statements.append((role, "\n".join(current).rstrip()[: -len(end)].rstrip()))
                current = []
        if current:
            raise ValueError(f"{self.path.name}: last statement does not end with {end!r}")
        return statements


def migrations() -> list[Migration]:
    """Every migration file in order; the numbers must run 1, 2, 3 ... without gaps."""
    found = []
    for path in sorted(MIGRATION_DIR.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.path.name}: expected number {expected:04d}")
    return found


#: The schema version this code is written for.
CODE_SCHEMA_VERSION = migrations()[-1].version


async def database_version(db: Database) -> int | None:
    """The schema version recorded in the database, or None for an empty database."""
    if not await db.fetch_val(Q.dbversion_table_exists):
        return None
    version = await db.fetch_val(Q.schema_version)
    return None if version is None else int(version)


async def database_roles(db: Database) -> frozenset[str]:
    """The roles a database holds: its ``dbrole`` rows (both for one made before roles)."""
    if not await db.fetch_val(Q.dbrole_table_exists):
        return ROLES
    return frozenset(str(r["role"]) for r in await db.fetch_all(Q.dbroles)) or ROLES


async def check_schema(db: Database, role: str = PROCESSING) -> int:
    """Raise SchemaMismatch unless the database is at exactly the code's version and holds
    the tables of ``role``."""
    version = await database_version(db)
    where = f"database {db.dsn.display()}"
    if version == CODE_SCHEMA_VERSION:
        held = await database_roles(db)
        if role not in held:
            raise SchemaMismatch(
                f"{where} holds the {', '.join(sorted(held))} tables, not the {role} ones "
                f"(db_dsn names the processing database, ipptopsps_dsn the ippToPsps one)"
            )
        return version
    if version is None:
        raise SchemaMismatch(
            f"{where} has no schema (this code needs version {CODE_SCHEMA_VERSION}); run 'ippctl db upgrade'"
        )
    if version < CODE_SCHEMA_VERSION:
        raise SchemaMismatch(
            f"{where} is at schema version {version}, this code needs {CODE_SCHEMA_VERSION}; "
            "run 'ippctl db upgrade'"
        )
    raise SchemaMismatch(
        f"{where} is at schema version {version}, newer than this code's "
        f"{CODE_SCHEMA_VERSION}; install the newer code"
    )


def check_database_name(name: str) -> str:
    """Database names are identifiers that cannot be sent as parameters: allow a safe set."""
    if not _DB_NAME.match(name):
        raise DbError(f"database name {name!r} must be 1-64 letters, digits or '_'")
    return name


@asynccontextmanager
async def server_connection(settings: Settings, dsn: Dsn) -> AsyncIterator[aiomysql.Connection]:
    """A connection to the DSN's server, not to its database (which may not exist)."""
    kwargs = dsn.connect_kwargs()
    kwargs.pop("db")
    try:
        conn = await aiomysql.connect(connect_timeout=settings.db_connect_timeout_s, **kwargs)
    except (pymysql.err.Error, OSError) as exc:
        raise DbError(f"cannot reach database server for {dsn.display()}: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


async def database_exists(settings: Settings, dsn: Dsn) -> bool:
    name = check_database_name(dsn.database)
    async with server_connection(settings, dsn) as conn, conn.cursor() as cur:
        await cur.execute(Q.database_exists.sql, {"name": name})
        (exists,) = await cur.fetchone()
        return bool(exists)


async def create_database(settings: Settings, dsn: Dsn) -> bool:
    """Create the DSN's database if missing; returns True if it was created."""
    name = check_database_name(dsn.database)
    async with server_connection(settings, dsn) as conn, conn.cursor() as cur:
        await cur.execute(Q.database_exists.sql, {"name": name})
        (exists,) = await cur.fetchone()
        if exists:
            return False
        # An identifier, checked against _DB_NAME above: it cannot be a parameter.
        try:
            await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] != 1007:  # created meanwhile by an upgrade on another node
                raise
            return False
        return True


async def drop_database(settings: Settings, dsn: Dsn) -> None:
    """Drop the DSN's database (the test suite's per-session databases, the demo's reset)."""
    name = check_database_name(dsn.database)
    async with server_connection(settings, dsn) as conn, conn.cursor() as cur:
        with warnings.catch_warnings():  # "database doesn't exist" is what IF EXISTS is for
            warnings.simplefilter("ignore", pymysql.Warning)
            await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def upgrade_lock_name(database: str) -> str:
    """The named lock that serialises upgrades of one database (server-wide, at most 64
    characters as MariaDB allows)."""
    return f"ipp_schema_upgrade.{database}"[:64]


async def is_galera(settings: Settings, dsn: Dsn) -> bool:
    """True when the DSN's server is a Galera node (``wsrep_on`` is ON)."""
    async with server_connection(settings, dsn) as conn, conn.cursor() as cur:
        await cur.execute(Q.wsrep_on.sql)
        row = await cur.fetchone()
        return bool(row) and str(row[1]).upper() == "ON"


@asynccontextmanager
async def upgrade_lock(
    settings: Settings, dsn: Dsn, waiting: Callable[[str], None] | None = None
) -> AsyncIterator[None]:
    """Hold the upgrade lock of the DSN's database for the body (creating the database and
    applying migrations), so two ``ippctl db upgrade`` run at once, from any hosts, apply
    each migration once: the second waits up to ``db_upgrade_lock_wait_s`` and then finds
    the work done.

    On one server this is a named lock (GET_LOCK) on its own connection; closing it frees
    the lock. On a Galera cluster a named lock binds only the node it was taken on, so the
    lock is a leased row instead (:func:`_lease_lock`)."""
    if await is_galera(settings, dsn):
        async with _lease_lock(settings, dsn, waiting):
            yield
        return
    name = upgrade_lock_name(check_database_name(dsn.database))
    async with server_connection(settings, dsn) as conn, conn.cursor() as cur:
        await cur.execute(Q.upgrade_lock_try.sql, {"name": name, "wait_s": 0})
        (granted,) = await cur.fetchone()
        if not granted:
            await cur.execute(Q.upgrade_lock_holder.sql, {"name": name})
            (holder,) = await cur.fetchone()
            _say_waiting(settings, dsn, f"server connection {holder} holds lock {name}", waiting)
            await cur.execute(
                Q.upgrade_lock_try.sql, {"name": name, "wait_s": settings.db_upgrade_lock_wait_s}
            )
            (granted,) = await cur.fetchone()
        if granted != 1:
            raise DbError(
                f"{dsn.display()}: no upgrade lock ({name}) within "
                f"{settings.db_upgrade_lock_wait_s:g} s (db_upgrade_lock_wait_s)"
            )
        try:
            yield
        finally:
            await cur.execute(Q.upgrade_lock_release.sql, {"name": name})


def _say_waiting(settings: Settings, dsn: Dsn, who: str, waiting: Callable[[str], None] | None) -> None:
    message = (
        f"another upgrade of {dsn.display()} is running ({who}); waiting up to "
        f"{settings.db_upgrade_lock_wait_s:g} s"
    )
    log.info("upgrade_lock_wait", holder=who)
    if waiting is not None:
        waiting(message)


#: How long a Galera upgrade lock lasts unless renewed, and how often its holder renews it.
LEASE_S = 60
LEASE_RENEW_S = 10.0
LEASE_POLL_S = 1.0


@asynccontextmanager
async def _lease_lock(
    settings: Settings, dsn: Dsn, waiting: Callable[[str], None] | None
) -> AsyncIterator[None]:
    """The Galera upgrade lock: a ``schema_upgrade_lock`` row naming its holder, with a lease
    the holder renews while it works. Two nodes taking it at once cannot both commit (the
    cluster certifies one write of a key and aborts the other, which then retries), and a
    holder that died frees it when the lease runs out."""
    await create_database(settings, dsn)
    name = upgrade_lock_name(check_database_name(dsn.database))
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    params = {"name": name, "holder": holder, "lease_s": LEASE_S}
    try:
        conn = await aiomysql.connect(
            connect_timeout=settings.db_connect_timeout_s, autocommit=True, **dsn.connect_kwargs()
        )
    except (pymysql.err.Error, OSError) as exc:
        raise DbError(f"cannot reach database server for {dsn.display()}: {exc}") from None
    try:
        async with conn.cursor() as cur:
            await cur.execute(Q.lease_lock_table.sql)
            await _take_lease(cur, settings, dsn, params, waiting)
            renewer = asyncio.create_task(_renew_lease(settings, dsn, params), name="upgrade-lease-renew")
            try:
                yield
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                await cur.execute(Q.lease_lock_release.sql, params)
    finally:
        conn.close()


async def _take_lease(
    cur: aiomysql.Cursor,
    settings: Settings,
    dsn: Dsn,
    params: dict[str, object],
    waiting: Callable[[str], None] | None,
) -> None:
    deadline = time.monotonic() + settings.db_upgrade_lock_wait_s
    said = False
    while True:
        try:
            await cur.execute(Q.lease_lock_take.sql, params)
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != 1213:  # a certification conflict: the other writer won; look again
                raise
        await cur.execute(Q.lease_lock_holder.sql, params)
        row = await cur.fetchone()
        if row and row[0] == params["holder"]:
            return
        if time.monotonic() >= deadline:
            raise DbError(
                f"{dsn.display()}: no upgrade lock ({params['name']}) within "
                f"{settings.db_upgrade_lock_wait_s:g} s (db_upgrade_lock_wait_s)"
            )
        if not said and row:
            who = f"{row[0]} holds the lease of {params['name']} until {row[1]}"
            _say_waiting(settings, dsn, who, waiting)
            said = True
        await asyncio.sleep(LEASE_POLL_S)


async def _renew_lease(settings: Settings, dsn: Dsn, params: dict[str, object]) -> None:
    """Extend the lease every LEASE_RENEW_S, each time on a connection of its own (so being
    cancelled never leaves the holder's connection mid-statement). A failed renewal is logged
    and tried again at the next tick: the lease outlasts several of them."""
    while True:
        await asyncio.sleep(LEASE_RENEW_S)
        try:
            conn = await aiomysql.connect(
                connect_timeout=settings.db_connect_timeout_s, autocommit=True, **dsn.connect_kwargs()
            )
            try:
                async with conn.cursor() as cur:
                    renewed = await cur.execute(Q.lease_lock_renew.sql, params)
            finally:
                conn.close()
        except (pymysql.err.Error, OSError) as exc:
            log.warning("upgrade_lease_renew_failed", lock=params["name"], error=str(exc))
            continue
        if not renewed:
            log.error("upgrade_lease_lost", lock=params["name"], holder=params["holder"])


#: The migration that made ``dbrole``: from it on, each migration's record names the roles.
DBROLE_VERSION = 20


async def upgrade(db: Database, roles: frozenset[str] = ROLES) -> list[Migration]:
    """Apply every migration above the database's version, recording each one. A new
    database takes ``roles``; one that exists keeps those it holds."""
    version = await database_version(db)
    current = version or 0
    if version is None:  # said before the first migration, so an upgrade cut short keeps it
        await _execute_ddl(db, Q.dbrole_create.sql)
        for role in sorted(roles):
            await db.execute(Q.dbrole_add, role=role)
    else:
        roles = await database_roles(db)
    if current > CODE_SCHEMA_VERSION:
        raise SchemaMismatch(
            f"database {db.dsn.display()} is at schema version {current}, newer than this "
            f"code's {CODE_SCHEMA_VERSION}; install the newer code"
        )
    applied = []
    for migration in migrations():
        if migration.version <= current:
            continue
        log.info("migration_apply", version=migration.version, name=migration.name)
        with warnings.catch_warnings():
            if migration.version == DBROLE_VERSION:  # a new database made dbrole already
                warnings.filterwarnings("ignore", "Table 'dbrole' already exists", pymysql.Warning)
            for statement in migration.statements(roles):
                await _execute_ddl(db, statement)

        async def record(tx: Tx, m: Migration = migration) -> None:
            await tx.execute(Q.record_migration, version=m.version, name=m.name)
            if m.version == DBROLE_VERSION and version is not None:  # made before roles: both
                for role in sorted(roles):
                    await tx.execute(Q.dbrole_add, role=role)
            await tx.execute(Q.clear_dbversion)
            await tx.execute(Q.set_dbversion, version=m.version)

        await db.transaction(record, name="record_migration")
        applied.append(migration)
    return applied


async def _execute_ddl(db: Database, statement: str) -> None:
    async def run(tx: Tx) -> None:
        await tx.execute_raw(statement)

    await db.transaction(run, name="migration")


async def apply_statements(db: Database, statements: list[str], *, name: str) -> None:
    """Run trusted DDL statements one by one (each its own transaction, as DDL commits
    anyway): the stand-ins' ``CREATE TABLE IF NOT EXISTS`` schemas."""
    for statement in statements:
        await _execute_ddl(db, statement)
    log.debug("schema_applied", name=name, statements=len(statements))
