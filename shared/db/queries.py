"""Named SQL queries, kept in ``.sql`` files.

A query file holds blocks that each start with a ``-- name: <name>`` line; the following
lines up to the next header are the statement, written with ``%(param)s`` placeholders only
(values are always sent as parameters, never formatted into the text). The code refers to
queries through :data:`Q`, e.g. ``Q.heartbeat``, so a typo fails at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

QUERY_DIR = Path(__file__).resolve().parent / "sql" / "queries"
_HEADER = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\Z")


@dataclass(frozen=True)
class Query:
    """One named, parameterised statement and where it was read from."""

    name: str
    sql: str
    source: str


def parse_query_file(path: Path) -> dict[str, Query]:
    """Read the named queries of one ``.sql`` file."""
    queries: dict[str, Query] = {}
    name: str | None = None
    lines: list[str] = []
    start = 0

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip()
        sql = sql.rstrip(";").strip()
        if not sql:
            raise ValueError(f"{path}:{start}: query {name} is empty")
        if name in queries:
            raise ValueError(f"{path}:{start}: query {name} is defined twice")
        queries[name] = Query(name=name, sql=sql, source=f"{path.name}:{start}")

    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _HEADER.match(line)
        if match:
            flush()
            name, lines, start = match.group(1), [], number
        elif name is not None:
            lines.append(line)
    flush()
    return queries


def load_queries(*directories: Path) -> dict[str, Query]:
    """Every named query of every ``.sql`` file in the directories; names are global."""
    found: dict[str, Query] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.sql")):
            for name, query in parse_query_file(path).items():
                if name in found:
                    raise ValueError(
                        f"query {name} is defined in both {found[name].source} and {query.source}"
                    )
                found[name] = query
    return found


class QueryBook:
    """Attribute access to a set of named queries: ``book.name`` is a :class:`Query`."""

    def __init__(self, queries: dict[str, Query]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._queries)


#: The project's queries, from ``shared/db/sql/queries/*.sql``.
Q = QueryBook(load_queries(QUERY_DIR))
