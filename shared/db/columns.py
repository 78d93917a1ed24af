"""The lengths of the text columns, read from the database's own catalogue.

A note written to a ``VARCHAR(255)`` column must fit, and the place that knows its length is
the schema, not a ``[:255]`` beside each write: :meth:`TextLimits.fit` cuts a text to its
column (with a mark that it was cut) and refuses a column it does not know, so a typo fails
loudly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.db.database import Database
from shared.db.queries import Q

CUT = "…"


@dataclass(frozen=True)
class TextLimits:
    """``(table, column) -> length`` of every VARCHAR/CHAR column of one database."""

    lengths: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    async def read(cls, db: Database) -> TextLimits:
        rows = await db.fetch_all(Q.text_column_limits)
        return cls({(str(r["tbl"]), str(r["col"])): int(r["n"]) for r in rows})

    def fit(self, table: str, column: str, text: str, *, reserve: int = 0) -> str:
        """``text`` cut to the column's length less ``reserve`` characters (room for what a
        statement appends to it); its last character then marks the cut."""
        try:
            limit = self.lengths[(table, column)] - reserve
        except KeyError:
            raise ValueError(f"no text column {table}.{column} in the schema") from None
        return text if len(text) <= limit else text[: limit - len(CUT)] + CUT
