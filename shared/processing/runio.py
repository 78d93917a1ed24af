"""Export a run's rows to an mdc file and import such a file (REFERENCE 4).

An export begins with the ``dbversion`` block, then for each of the stage's tables (parents
first) a ``<table> MULTI`` line and one ``<table> METADATA`` block per row, each column typed
from the database's own catalog. Import refuses a file of another schema version, inserts the
rows with their original ids inside one transaction, and accepts a dependent row only if its
run was imported from the same file. Re-importing an identical run is a no-op.

NULL values are written as the IPP writes them (psLib ``psDB.c`` reads a NULL column as its
type's "NaN" and ``psMetadataConfig.c`` prints that): an integer as its type's largest value
(S32 ``2147483647``), a float as ``nan``, a time as ``TAI  NULL``, a string as ``NULL``; import
reads those back as NULL, as psDB writes them (``psDBIsPTypeNaN``). A file with ``NULL`` for a
number (this project's exports before schema 10) is still read. ``dbversion.schema_version``
is a STR, as the IPP's ``pxCheckImportVersion`` reads it.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.core.errors import IppError, MdcError
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q, Query
from shared.db.schema import CODE_SCHEMA_VERSION
from shared.formats import mdc
from shared.formats.mdc import Block, Scalar
from shared.processing.runs import other_owners, path_base_owners
from shared.processing.stages import STAGES, Stage, stage, table_query

_MDC_TYPES = {
    "bigint": "S64",
    "int": "S32",
    "mediumint": "S32",
    "smallint": "S16",
    "tinyint": "S8",
    "float": "F32",
    "double": "F64",
    "decimal": "F64",
    "varchar": "STR",
    "char": "STR",
    "text": "STR",
    "tinytext": "STR",
    "mediumtext": "STR",
    "enum": "STR",
    "datetime": "UTC",
    "timestamp": "UTC",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


class RunIoError(IppError):
    """An export or import cannot be done; the database is unchanged."""


#: Columns that are this site's bookkeeping (agent claims), never exported or imported.
LOCAL_COLUMNS = frozenset({"owner", "claimed_at"})
#: The states a run (and its components) can have when it is exported or shipped: a run
#: imported in goto_*, update or error_* would set this site's agents working on files it
#: does not own.
SHIPPED_STATES = ("full", "cleaned", "scrubbed", "purged")


@dataclass(frozen=True)
class _Catalog:
    """What the database says of one table's exported columns."""

    #: column name -> mdc type
    types: dict[str, str]
    #: NOT NULL columns with a default: a NULL in a file (psDB's marker of one, e.g. an IPP
    #: ``magicked`` of 9223372036854775807) takes the default instead of being refused.
    defaulted: frozenset[str]


async def _catalog(db: Database | Tx, table: str) -> _Catalog:
    """From information_schema, so exports and imports follow the schema."""
    rows = await db.fetch_all(Q.table_columns, table=table)
    types, defaulted = {}, set()
    for r in rows:
        name = str(r["name"])
        if name in LOCAL_COLUMNS:
            continue
        kind = _MDC_TYPES.get(str(r["type"]).lower())
        if kind is None:
            raise RunIoError(f"{table}.{name}: column type {r['type']} has no mdc type")
        types[name] = kind
        if r["nullable"] == "NO" and r["has_default"]:
            defaulted.add(name)
    if not types:
        raise RunIoError(f"table {table} does not exist in this database")
    return _Catalog(types, frozenset(defaulted))


async def _columns(db: Database | Tx, table: str) -> dict[str, str]:
    """Column name -> mdc type of the table's exported columns."""
    return (await _catalog(db, table)).types


def _value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value)
    if kind in ("F32", "F64"):
        return float(value)
    if kind in mdc.INT_RANGES:
        return int(value)
    return value


def _exported(kind: str, value: Any) -> Scalar:
    """A column value as psDB and psMetadataConfig write it, NULLs included (module doc)."""
    if value is None:
        if kind in mdc.INT_RANGES:
            return Scalar(kind, mdc.INT_RANGES[kind][1])
        if kind in ("F32", "F64"):
            return Scalar(kind, math.nan)
        if kind in mdc.TIME_TYPES:
            return Scalar("TAI", None)
        return Scalar(kind, None)
    return Scalar(kind, _value(kind, value))


def _imported(item: Scalar) -> Any:
    """The database value of an exported one: psDB's NULL markers become NULL again."""
    value = item.value
    if item.type in mdc.INT_RANGES and value == mdc.INT_RANGES[item.type][1]:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean_state(table: str, row: Row, column: str) -> None:
    state = row.get(column)
    if state is None:
        return
    if state == "full":
        row[column] = "cleaned"
    elif state != "cleaned":
        raise RunIoError(
            f"cannot export {table} as cleaned: its {column} is {state!r} "
            "(only full or cleaned rows can be exported with --clean)"
        )


async def export_run(db: Database, stage_name: str, run_id: int, *, clean: bool = False) -> Block:
    """The run's rows as an mdc document."""
    st = stage(stage_name)
    doc = Block()
    version = Block()
    version.add("schema_version", Scalar("STR", str(CODE_SCHEMA_VERSION)))
    doc.multi.append("dbversion")  # pxCheckImportVersion reads it as a MULTI
    doc.add("dbversion", version)
    for table in st.export_tables:
        columns = await _columns(db, table)
        rows = await db.fetch_all(table_query("export", table), id=run_id)
        if table == st.run_table and not rows:
            raise RunIoError(f"{table} {run_id} does not exist")
        if rows:  # an empty table is left out: a MULTI of nothing would be printed first,
            doc.multi.append(table)  # before dbversion, where the IPP's receiver refuses it
        for row in rows:
            if clean:
                for column in ("state", "data_state"):
                    if column in row:
                        _clean_state(table, row, column)
            block = Block()
            for name, kind in columns.items():
                block.add(name, _exported(kind, row[name]))
            doc.add(table, block)
    return doc


def export_text(doc: Block) -> str:
    try:
        return mdc.dumps(doc)
    except MdcError as exc:
        raise RunIoError(f"cannot write the export: {exc}") from None


@dataclass(frozen=True)
class ImportResult:
    stage: str
    run_id: int
    rows: int
    already_present: bool
    #: The file's dbversion.schema_version (this project's number or the IPP's ``1.1.72``).
    version: str = ""
    #: ``table.column`` of the file that this database lacks, left out on request.
    ignored_columns: tuple[str, ...] = ()


def stage_of(doc: Block) -> Stage:
    """The stage of an export, from its first table (RunIoError if it is not one)."""
    tables = [name for name, _ in doc.entries if name != "dbversion"]
    if not tables:
        raise RunIoError("the file holds no table rows")
    for st in STAGES.values():
        if tables[0] == st.run_table:
            unknown = sorted({t for t in tables if t not in st.export_tables})
            if unknown:
                raise RunIoError(f"tables {', '.join(unknown)} do not belong to a {st.name} export")
            return st
    raise RunIoError(
        f"the first table is {tables[0]}, which is not a run table "
        f"({', '.join(s.run_table for s in STAGES.values())})"
    )


#: The IPP's own schema versions (``dbversion.schema_version``, e.g. ``1.1.72``).
_IPP_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)+\Z")


def check_version(doc: Block) -> str:
    """The export's schema version, or RunIoError if it is not one this database can take.

    Taken: this project's own version or an older one (S32 before schema 10, STR since), and
    the IPP's (``1.1.72``): the columns of such a file are then checked by name, as each
    row is inserted, against this database's own. A newer version of this project is
    refused: its rows may mean what this code does not know."""
    version = doc.get("dbversion")
    if not isinstance(version, Block) or doc.entries[0][0] != "dbversion":
        raise RunIoError("the file does not begin with a dbversion block")
    found = version.value("schema_version")
    text = str(found).strip() if found is not None else ""
    if _IPP_VERSION.match(text):
        return text
    if not text.isdigit():
        raise RunIoError(
            f"the file's dbversion.schema_version is {found!r}: neither this project's version "
            f"(a number, here {CODE_SCHEMA_VERSION}) nor the IPP's (such as 1.1.72)"
        )
    if int(text) > CODE_SCHEMA_VERSION:
        raise RunIoError(
            f"the file is of schema version {text}, newer than this database's "
            f"{CODE_SCHEMA_VERSION}; upgrade this site (ippctl db upgrade) or export it again "
            "from a matching site"
        )
    return text


def _rows(doc: Block, st: Stage) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in st.export_tables}
    for name, item in doc.entries:
        if name == "dbversion":
            continue
        if name not in rows:
            raise RunIoError(f"{name}: not a table of a {st.name} export ({', '.join(st.export_tables)})")
        if not isinstance(item, Block):
            raise RunIoError(f"{name}: expected a METADATA block per row")
        row = {}
        for column, value in item.entries:
            if not isinstance(value, Scalar):
                raise RunIoError(f"{name}.{column}: expected a scalar value")
            row[column] = _imported(value)
        rows[name].append(row)
    return rows


async def import_run(
    db: Database,
    text: str,
    source: str = "<import>",
    *,
    also: Callable[[Tx], Awaitable[None]] | None = None,
    ignore_unknown_columns: bool = False,
) -> ImportResult:
    """Insert the file's rows in one transaction; nothing is written if anything is wrong.

    ``also`` runs in the same transaction (e.g. recording a distribution fileset as done),
    so the rows and that record commit together or not at all. A column of the file that
    this database lacks is refused by name, unless ``ignore_unknown_columns`` (then its
    values are left out and the columns are listed in the result)."""
    doc = await asyncio.to_thread(mdc.loads, text, source)  # a large file: off the loop
    version = check_version(doc)
    st = stage_of(doc)
    rows = _rows(doc, st)
    runs = rows[st.run_table]
    if len(runs) != 1:
        raise RunIoError(f"{source}: expected exactly one {st.run_table} row, found {len(runs)}")
    run_id = runs[0].get(st.id_column)
    if not isinstance(run_id, int):
        raise RunIoError(f"{source}: the {st.run_table} row has no {st.id_column}")
    for table, table_rows in rows.items():
        for number, row in enumerate(table_rows, start=1):
            if row.get(st.id_column) != run_id:
                raise RunIoError(
                    f"{source}: {table} row {number} refers to {st.id_column} "
                    f"{row.get(st.id_column)}, which is not the run in the file ({run_id})"
                )
    if st.lifecycle:
        _check_states(source, st, rows)
    bases = sorted(
        {
            str(r["path_base"])
            for t in rows.values()
            for r in t
            if isinstance(r.get("path_base"), str) and r["path_base"]
        }
    )

    async def insert(tx: Tx) -> ImportResult:
        if st.lifecycle:
            await _check_storage_owners(tx, source, st, run_id, bases)
        fitted: dict[str, list[dict[str, Any]]] = {}
        ignored: set[str] = set()
        for table in st.export_tables:
            catalog = await _catalog(tx, table)
            fitted[table] = [
                _fit(source, table, r, catalog, ignore_unknown_columns, ignored) for r in rows[table]
            ]
        existing = await tx.fetch_all(table_query("export", st.run_table), id=run_id)
        if existing:
            if await _identical(tx, st, run_id, fitted):
                if also is not None:
                    await also(tx)
                return ImportResult(st.name, run_id, 0, True, version, tuple(sorted(ignored)))
            raise RunIoError(
                f"{st.run_table} {run_id} already exists here with other values; nothing was imported"
            )
        count = 0
        for table in st.export_tables:
            columns = await _columns(tx, table)
            for row in fitted[table]:
                await tx.execute(_insert_query(table, row, columns), **_params(row))
                count += 1
        if also is not None:
            await also(tx)
        return ImportResult(st.name, run_id, count, False, version, tuple(sorted(ignored)))

    return await db.transaction(insert, name="import_run")


def _check_states(source: str, st: Stage, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse a run or component in a state no shipped run has."""
    for row in rows[st.run_table]:
        if row.get("state") not in SHIPPED_STATES:
            raise RunIoError(
                f"{source}: {st.run_table} {row.get(st.id_column)} is in state "
                f"{row.get('state')!r}; an imported run must be one of "
                f"{', '.join(SHIPPED_STATES)}"
            )
    if st.component_table and st.component_key and st.per_file_state:
        for row in rows[st.component_table]:
            if row.get("data_state") not in SHIPPED_STATES:
                raise RunIoError(
                    f"{source}: {st.component_table} {row.get(st.component_key)} "
                    f"is in data_state {row.get('data_state')!r}; an imported "
                    f"component must be one of {', '.join(SHIPPED_STATES)}"
                )


async def _check_storage_owners(tx: Tx, source: str, st: Stage, run_id: int, bases: list[str]) -> None:
    """Refuse a run whose path_base another run here already has (shared storage would let
    one run's cleanup delete the other's files)."""
    owners = await path_base_owners(tx, bases)
    for base in bases:
        shared = other_owners(owners, base, st.name, run_id)
        if shared:
            raise RunIoError(
                f"{source}: path_base {base} belongs to {', '.join(shared)} here; "
                f"{st.run_table} {run_id} may not share its storage; nothing was "
                "imported"
            )


def _fit(
    source: str, table: str, row: dict[str, Any], catalog: _Catalog, ignore: bool, ignored: set[str]
) -> dict[str, Any]:
    """The file's row as it is inserted: a column the database lacks is refused by name (or
    left out and noted in ``ignored``), a NULL in a NOT NULL column with a default is left
    out so the default applies."""
    unknown = sorted(c for c in row if c not in catalog.types)
    if unknown and not ignore:
        raise RunIoError(
            f"{source}: {table} has column(s) this database lacks: {', '.join(unknown)} "
            "(--ignore-unknown-columns leaves them out); nothing was imported"
        )
    ignored.update(f"{table}.{c}" for c in unknown)
    return {c: v for c, v in row.items() if c in catalog.types and not (v is None and c in catalog.defaulted)}


async def _identical(tx: Tx, st: Stage, run_id: int, rows: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether the rows here equal the file's (as fitted), compared as exported values over
    the columns every row of the file gives (floats to a relative 1e-6: F32 columns pass
    through ``%.7g`` text)."""
    for table in st.export_tables:
        types = await _columns(tx, table)
        given = set(types).intersection(*rows[table]) if rows[table] else set(types)
        columns = {c: k for c, k in types.items() if c in given}
        here = await tx.fetch_all(table_query("export", table), id=run_id)
        mine = sorted(([_value(k, r[c]) for c, k in columns.items()] for r in here), key=repr)
        theirs = sorted(([_value(k, r.get(c)) for c, k in columns.items()] for r in rows[table]), key=repr)
        if len(mine) != len(theirs):
            return False
        for a_row, b_row in zip(mine, theirs, strict=True):
            if not all(_same(a, b) for a, b in zip(a_row, b_row, strict=True)):
                return False
    return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a.replace(tzinfo=None, microsecond=0) == b.replace(tzinfo=None, microsecond=0)
    return bool(a == b)


def _insert_query(table: str, row: dict[str, Any], columns: dict[str, str]) -> Query:
    """An INSERT for the file's columns. Identifiers cannot be parameters, so every one is
    checked against the database's own catalog (``columns``) before it is named; values are
    always parameters. The caller has already refused (or left out) the file's columns that
    the catalog lacks; only catalog names are named here."""
    names = [c for c in columns if c in row]
    for name in (table, *names):
        if not _IDENT.match(name):
            raise RunIoError(f"refusing identifier {name!r}")
    cols = ", ".join(f"`{c}`" for c in names)
    values = ", ".join(f"%(p_{c})s" for c in names)
    return Query(f"import_{table}", f"INSERT INTO `{table}` ({cols}) VALUES ({values})", "runio")


def _params(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for column, value in row.items():
        if isinstance(value, datetime):
            value = value.replace(tzinfo=None)
        out[f"p_{column}"] = value
    return out
