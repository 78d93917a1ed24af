"""The database layer: an aiomysql pool with deadlines, reconnects and transaction retry.

- Reads and single writes run on autocommit connections, so a poll always sees the latest
  committed rows (a REPEATABLE READ snapshot would hide an operator's change).
- :meth:`Database.transaction` runs a function inside one short explicit transaction and
  retries the *whole* function on deadlock (1213) and lock wait timeout (1205).
- Every call has a deadline (``db_statement_timeout_s``); a connection that ran past it is
  closed rather than reused.
- A lost connection is retried with jittered exponential backoff for up to
  ``db_reconnect_max_s``; statements must therefore be idempotent (the project's are).
- Driver errors become :mod:`shared.core.errors` types here and nowhere else.
"""

from __future__ import annotations

import asyncio
import random
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from shared.core.errors import (
    DbConflict,
    DbError,
    DbIntegrityError,
    DbTimeout,
    DbUnavailable,
)
from shared.core.log import get_logger
from shared.core.settings import Dsn, Settings, parse_dsn
from shared.db.queries import Query

# Server notes such as "Duplicate entry" on INSERT IGNORE are expected outcomes of idempotent
# statements (the affected-row count tells the caller); they are not printed on stderr.
warnings.filterwarnings("ignore", category=pymysql.Warning)

T = TypeVar("T")
Row = dict[str, Any]

#: Client/server codes that mean the connection is gone or cannot be made, or (1047, from a
#: Galera node that is joining or has lost the primary component) that the node cannot
#: take statements yet.
LOST_CONNECTION = {1047, 1053, 1927, 2003, 2006, 2013, 2055, 4031}
#: Codes after which the whole transaction is retried.
RETRY_TRANSACTION = {1205, 1213}

log = get_logger("db")


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**attempt)]."""
    return random.uniform(0, min(max_s, base_s * (2**attempt)))


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_lost_connection(exc: BaseException) -> bool:
    """True for errors after which a fresh connection may succeed."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    if isinstance(exc, pymysql.err.OperationalError) and _code(exc) in LOST_CONNECTION:
        return True
    return isinstance(exc, ConnectionError | OSError) and not isinstance(exc, TimeoutError)


def map_error(exc: BaseException, what: str, dsn: Dsn) -> DbError:
    """Turn a driver exception into the project's own, naming the statement."""
    code = _code(exc)
    message = exc.args[1] if len(getattr(exc, "args", ())) > 1 else str(exc)
    if is_lost_connection(exc):
        return DbUnavailable(f"database {dsn.display()} unreachable during {what}: {message}")
    if code in RETRY_TRANSACTION:
        return DbConflict(f"{what}: {message} ({code})")
    if isinstance(exc, pymysql.err.IntegrityError):
        return DbIntegrityError(f"{what}: {message} ({code})")
    if code == 1049:
        return DbError(
            f"database {dsn.database!r} does not exist on {dsn.display()}; "
            "run 'ippctl db upgrade' to create it"
        )
    if code in (1044, 1045):
        return DbError(f"database {dsn.display()} refused the login: {message}")
    if code == 1792:
        return DbError(f"{what} writes, on a read-only session of {dsn.display()}: {message}")
    return DbError(f"{what}: {message} ({code})")


@dataclass
class DbStats:
    """What this process's retries cost: counted here, logged as ``db_retry_conflict`` and
    reported by the benchmarks (on Galera most conflicts are certification failures)."""

    conflicts: int = 0


def _init_command(sync_wait: int, read_only: bool = False) -> str:
    """Every session's set-up: UTC, on a Galera node its wsrep_sync_wait, and for a
    read-only pool ``tx_read_only`` (the server refuses every write, error 1792)."""
    causal = f" /*M!100000 , wsrep_sync_wait = {sync_wait:d} */" if sync_wait else ""
    reads = ", SESSION tx_read_only = 1" if read_only else ""
    return "SET SESSION time_zone = '+00:00'" + reads + causal


class Tx:
    """Statements inside one open transaction, on one connection."""

    def __init__(self, db: Database, conn: aiomysql.Connection) -> None:
        self._db = db
        self._conn = conn

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self._db._run(self._conn, query, params, "all")  # type: ignore[no-any-return]

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        return await self._db._run(self._conn, query, params, "one")  # type: ignore[no-any-return]

    async def fetch_val(self, query: Query, **params: Any) -> Any:
        row = await self.fetch_one(query, **params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: Query, **params: Any) -> int:
        """Run a write; returns the number of affected rows."""
        return await self._db._run(self._conn, query, params, "rowcount")  # type: ignore[no-any-return]

    async def insert(self, query: Query, **params: Any) -> int:
        """Run an INSERT; returns the new AUTO_INCREMENT id."""
        return await self._db._run(self._conn, query, params, "lastrowid")  # type: ignore[no-any-return]

    async def execute_many(self, query: Query, rows: list[dict[str, Any]]) -> int:
        """Run one statement for many parameter sets (an INSERT ... VALUES becomes one
        multi-row INSERT); returns the affected row count."""
        return await self._db._run_many(self._conn, query, rows)

    async def execute_raw(self, sql: str) -> None:
        """Run trusted SQL text from the project's own migration files (no parameters)."""
        await self._db._run(self._conn, Query("migration", sql, "migration"), None, "rowcount")


class Database:
    """A pool of connections to one database of one server."""

    def __init__(
        self, settings: Settings, dsn: Dsn, pool: aiomysql.Pool, stats: DbStats | None = None
    ) -> None:
        self.settings = settings
        self.dsn = dsn
        self._pool = pool
        self.stats = stats or DbStats()

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        dsn: Dsn | str | None = None,
        *,
        wait_s: float | None = None,
        pool_size: int | None = None,
        local_infile: bool = False,
        sync_wait: int | None = None,
        read_only: bool = False,
    ) -> Database:
        """Open a pool and check the server answers.

        ``wait_s`` is how long to keep retrying an unreachable server (default
        ``db_reconnect_max_s``; command-line tools pass 0 to fail at once).
        ``local_infile`` allows ``LOAD DATA LOCAL INFILE`` (the PSPS stand-in's bulk loads).
        ``sync_wait`` (default ``db_sync_wait``) is the sessions' ``wsrep_sync_wait`` on a
        Galera cluster: 1 makes every read wait until this node has applied what the cluster
        committed before it (set only in a MariaDB comment, so MySQL ignores it).
        ``read_only`` makes every session read-only: the loading side's reads of the
        processing database when it has a database of its own (``ipptopsps_dsn``).
        """
        parsed = parse_dsn(dsn or settings.effective_dsn()) if not isinstance(dsn, Dsn) else dsn
        pool = await aiomysql.create_pool(
            minsize=0,
            maxsize=pool_size or settings.db_pool_size,
            autocommit=True,
            connect_timeout=settings.db_connect_timeout_s,
            charset="utf8mb4",
            init_command=_init_command(settings.db_sync_wait if sync_wait is None else sync_wait, read_only),
            cursorclass=aiomysql.DictCursor,
            # rowcount = rows matched, not rows changed: guards such as
            # "UPDATE ... WHERE id = ? AND owner = ?" must see a match even when the new
            # values equal the old ones.
            client_flag=CLIENT.FOUND_ROWS,
            pool_recycle=3600,
            local_infile=local_infile,
            **parsed.connect_kwargs(),
        )
        db = cls(settings, parsed, pool)
        try:
            await db._ping(settings.db_reconnect_max_s if wait_s is None else wait_s)
        except BaseException:
            await db.close()
            raise
        return db

    def with_settings(self, settings: Settings) -> Database:
        """A view of this database with other deadlines and retry budgets, sharing the pool
        (close the original, not the view)."""
        return Database(settings, self.dsn, self._pool, self.stats)

    async def _ping(self, wait_s: float) -> None:
        ping = Query("ping", "SELECT 1 AS ok", "db.py")
        await self._with_reconnect(lambda conn: self._run(conn, ping, None, "one"), "ping", wait_s)

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    # -- autocommit calls -------------------------------------------------------------

    async def fetch_all(self, query: Query, **params: Any) -> list[Row]:
        return await self._call(query, params, "all")  # type: ignore[no-any-return]

    async def fetch_one(self, query: Query, **params: Any) -> Row | None:
        return await self._call(query, params, "one")  # type: ignore[no-any-return]

    async def fetch_val(self, query: Query, **params: Any) -> Any:
        row = await self.fetch_one(query, **params)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: Query, **params: Any) -> int:
        """Run one write in autocommit mode; returns the number of affected rows."""
        return await self._call(query, params, "rowcount")  # type: ignore[no-any-return]

    async def insert(self, query: Query, **params: Any) -> int:
        """Run one INSERT in autocommit mode; returns the new AUTO_INCREMENT id."""
        return await self._call(query, params, "lastrowid")  # type: ignore[no-any-return]

    async def _call(self, query: Query, params: dict[str, Any], want: str) -> Any:
        """One autocommit statement: it is its own transaction, so a deadlock victim is
        retried the same way as :meth:`transaction` retries a whole transaction."""
        return await self._retry_conflicts(
            lambda: self._with_reconnect(
                lambda conn: self._run(conn, query, params, want),
                query.name,
                self.settings.db_reconnect_max_s,
            ),
            query.name,
        )

    async def _retry_conflicts(self, attempt_fn: Callable[[], Awaitable[T]], name: str) -> T:
        attempts = self.settings.db_retry_attempts
        for attempt in range(attempts):
            try:
                return await attempt_fn()
            except DbConflict as exc:
                self.stats.conflicts += 1
                if attempt + 1 >= attempts:
                    raise DbConflict(f"{exc} (gave up after {attempts} attempts)") from None
                log.info("db_retry_conflict", what=name, attempt=attempt + 1, reason=str(exc))
                await asyncio.sleep(backoff_s(attempt, self.settings.db_backoff_base_s, 1.0))
        raise AssertionError("unreachable")

    # -- transactions -------------------------------------------------------------------

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]], *, name: str = "tx") -> T:
        """Run ``fn`` inside one transaction; retry all of it on deadlock / lock wait.

        ``fn`` may run more than once, so it must not have effects outside the database.
        """
        return await self._retry_conflicts(
            lambda: self._with_reconnect(
                lambda conn: self._run_tx(conn, fn), name, self.settings.db_reconnect_max_s
            ),
            name,
        )

    async def _run_tx(self, conn: aiomysql.Connection, fn: Callable[[Tx], Awaitable[T]]) -> T:
        await self._guard(conn, conn.begin(), "BEGIN")
        try:
            result = await fn(Tx(self, conn))
            await self._guard(conn, conn.commit(), "COMMIT")
        except BaseException:
            if not conn.closed:
                try:
                    async with asyncio.timeout(self.settings.db_statement_timeout_s):
                        await conn.rollback()
                except (pymysql.err.Error, OSError, TimeoutError):
                    conn.close()
            raise
        return result

    # -- the one place that talks to the driver -------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        async with asyncio.timeout(self.settings.db_connect_timeout_s + 1):
            conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def _with_reconnect(
        self, work: Callable[[aiomysql.Connection], Awaitable[T]], what: str, budget_s: float
    ) -> T:
        """Run ``work`` on a pooled connection, retrying lost connections within a budget."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                async with self._connection() as conn:
                    return await work(conn)
            except DbUnavailable as exc:
                error: DbError = exc
            except TimeoutError:
                error = DbUnavailable(
                    f"database {self.dsn.display()}: no connection within "
                    f"{self.settings.db_connect_timeout_s}s during {what}"
                )
            except pymysql.err.Error as exc:
                error = map_error(exc, what, self.dsn)
                if not isinstance(error, DbUnavailable):
                    raise error from None
            except OSError as exc:
                error = DbUnavailable(f"database {self.dsn.display()} unreachable during {what}: {exc}")
            elapsed = time.monotonic() - started
            if elapsed >= budget_s:
                raise error
            delay = min(
                backoff_s(attempt, self.settings.db_backoff_base_s * 4, self.settings.db_backoff_max_s),
                max(0.0, budget_s - elapsed),
            )
            log.warning(
                "db_reconnect", during=what, attempt=attempt + 1, retry_in_s=round(delay, 3), error=str(error)
            )
            attempt += 1
            await asyncio.sleep(delay)

    async def _guard(self, conn: aiomysql.Connection, aw: Awaitable[Any], what: str) -> Any:
        """Await a driver call under the deadline, mapping its errors."""
        try:
            async with asyncio.timeout(self.settings.db_statement_timeout_s):
                return await aw
        except TimeoutError:
            conn.close()
            raise DbTimeout(
                f"database call {what} ran past its {self.settings.db_statement_timeout_s}s deadline"
            ) from None
        except pymysql.err.Error as exc:
            error = map_error(exc, what, self.dsn)
            if isinstance(error, DbUnavailable):
                conn.close()
            raise error from None
        except OSError as exc:
            conn.close()
            raise DbUnavailable(f"database {self.dsn.display()} unreachable during {what}: {exc}") from None

    async def _run_many(self, conn: aiomysql.Connection, query: Query, rows: list[dict[str, Any]]) -> int:
        async def go() -> int:
            async with conn.cursor() as cur:
                await cur.executemany(query.sql, rows)
                return int(cur.rowcount)

        return await self._guard(conn, go(), query.name)  # type: ignore[no-any-return]

    async def _run(
        self,
        conn: aiomysql.Connection,
        query: Query,
        params: dict[str, Any] | None,
        want: str,
    ) -> Any:
        async def go() -> Any:
            async with conn.cursor() as cur:
                await cur.execute(query.sql, params if params else None)
                if want == "all":
                    return list(await cur.fetchall())
                if want == "one":
                    return await cur.fetchone()
                if want == "lastrowid":
                    return cur.lastrowid
                return cur.rowcount

        return await self._guard(conn, go(), query.name)
