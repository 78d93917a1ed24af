"""The stand-in's PSPS tables, made from the same VOTable files the loader writes from.

Every PSPS table exists twice: the merged table (``Detection``) with the PSPS primary key,
where a row can only arrive once, and a staging table (``stage_Detection``) with a ``batch``
column and no key, where a batch is loaded and checked before it is merged. Table and column
names are identifiers, which SQL cannot take as parameters: they come only from the project's
VOTable files and are checked against a strict pattern before any statement is made from
them; every value is still sent as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from shared.db.queries import Query
from shared.psps.schema import BATCH_TYPES, Table, batch_tables

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,60}\Z")
_SQL_TYPE = re.compile(r"SQL type ([A-Z]+)(?:\((\d+)\))?")
#: PSPS (SQL Server) types as MariaDB types: FLOAT is 8 bytes there, REAL 4, TINYINT unsigned.
_TYPES = {
    "TINYINT": "TINYINT UNSIGNED",
    "SMALLINT": "SMALLINT",
    "INT": "INT",
    "BIGINT": "BIGINT",
    "REAL": "FLOAT",
    "FLOAT": "DOUBLE",
    "VARCHAR": "VARCHAR",
}


def ident(name: str) -> str:
    """``name`` quoted as an identifier, after checking it is a plain one."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return f"`{name}`"


def sql_type(table: Table, column: str) -> str:
    col = table.column(column)
    found = _SQL_TYPE.search(col.description)
    if found is None or found.group(1) not in _TYPES:
        raise ValueError(f"{table.name}.{column}: the VOTable description gives no known SQL type")
    kind = _TYPES[found.group(1)]
    return f"{kind}({found.group(2) or col.arraysize or 1})" if kind == "VARCHAR" else kind


@dataclass(frozen=True)
class PspsTable:
    """One PSPS table and the statements the DXLayer runs on it."""

    table: Table
    create: str
    create_stage: str
    load: Query
    duplicates_within: Query
    duplicates_merged: Query
    merge: Query
    unstage: Query
    count: Query

    @property
    def name(self) -> str:
        return self.table.name


def _make(table: Table) -> PspsTable:
    name, stage = ident(table.name), ident(f"stage_{table.name}")
    cols = [ident(c.name) for c in table.columns]
    pk = [ident(c) for c in table.primary_key]
    defs = ", ".join(f"{ident(c.name)} {sql_type(table, c.name)} NOT NULL" for c in table.columns)
    col_list = ", ".join(cols)
    pk_list = ", ".join(pk)
    on = " AND ".join(f"s.{k} = m.{k}" for k in pk)
    src = f"votables/{table.name}"

    def q(what: str, sql: str) -> Query:
        return Query(f"psps_{what}_{table.name}", sql, src)

    return PspsTable(
        table=table,
        create=f"CREATE TABLE IF NOT EXISTS {name} ({defs}, PRIMARY KEY ({pk_list})) ENGINE=InnoDB",
        create_stage=f"CREATE TABLE IF NOT EXISTS {stage} (`batch` CHAR(9) NOT NULL, {defs}, "
        "KEY (`batch`)) ENGINE=InnoDB",
        load=q(
            "load",
            f"LOAD DATA LOCAL INFILE %(path)s INTO TABLE {stage} "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
            f"ESCAPED BY '' LINES TERMINATED BY '\\n' ({col_list}) "
            "SET `batch` = %(batch)s",
        ),
        duplicates_within=q(
            "dups_within",
            f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM {stage} "
            f"WHERE `batch` = %(batch)s GROUP BY {pk_list} "
            "HAVING COUNT(*) > 1) d",
        ),
        duplicates_merged=q(
            "dups_merged",
            f"SELECT COUNT(*) AS n FROM {stage} s JOIN {name} m ON {on} WHERE s.`batch` = %(batch)s",
        ),
        merge=q(
            "merge",
            f"INSERT INTO {name} ({col_list}) SELECT {col_list} FROM {stage} WHERE `batch` = %(batch)s",
        ),
        unstage=q("unstage", f"DELETE FROM {stage} WHERE `batch` = %(batch)s"),
        count=q("count", f"SELECT COUNT(*) AS n FROM {name}"),
    )


@cache
def psps_tables(batch_type: str) -> tuple[PspsTable, ...]:
    return tuple(_make(t) for t in batch_tables(batch_type))


def all_tables() -> list[PspsTable]:
    return [t for kind in BATCH_TYPES for t in psps_tables(kind)]
