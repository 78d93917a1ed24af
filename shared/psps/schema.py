"""The PSPS tables of each batch type, read from the VOTable files beside this module.

The VOTable files (``votables/<TYPE>.xml``) are the one description of the tables: column
names, types, units, UCDs, descriptions and null values. The batch writer takes its columns
from here, so no column list is repeated in code.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io.votable import parse

from shared.core.errors import IppError
from shared.psps import BATCH_TYPES

VOTABLES = Path(__file__).resolve().parent / "votables"
__all__ = ["BATCH_TYPES", "Column", "SchemaError", "Table", "batch_tables"]
_DTYPES = {
    "long": np.int64,
    "int": np.int32,
    "short": np.int16,
    "unsignedByte": np.uint8,
    "double": np.float64,
    "float": np.float32,
}
_PK = re.compile(r"Primary key: ([A-Za-z0-9_,]+)\.")


class SchemaError(IppError):
    """A batch type or table that has no description, or a description that is not valid."""


@dataclass(frozen=True)
class Column:
    name: str
    datatype: str
    arraysize: int | None
    unit: str | None
    ucd: str | None
    null: Any
    description: str

    @property
    def dtype(self) -> Any:
        """The numpy dtype of the column (fixed-width bytes for strings)."""
        if self.datatype == "char":
            return np.dtype(f"S{self.arraysize or 1}")
        return np.dtype(_DTYPES[self.datatype])


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    description: str

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(f"table {self.name} has no column {name}")


@cache
def batch_tables(batch_type: str) -> tuple[Table, ...]:
    """The tables of a batch type, in the order of its VOTable file."""
    if batch_type not in BATCH_TYPES:
        raise SchemaError(f"unknown batch type {batch_type!r} (types: {', '.join(BATCH_TYPES)})")
    path = VOTABLES / f"{batch_type}.xml"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        doc = parse(str(path), verify="exception")
    tables = []
    for t in doc.iter_tables():
        description = " ".join(str(t.description or "").split())
        pk = _PK.search(description)
        if pk is None:
            raise SchemaError(f"{path.name}: table {t.name} names no primary key")
        columns = tuple(
            Column(
                f.name,
                f.datatype,
                int(f.arraysize) if f.arraysize else None,
                f.unit and str(f.unit),
                f.ucd,
                f.values.null if f.values is not None else None,
                " ".join(str(f.description or "").split()),
            )
            for f in t.fields
        )
        tables.append(Table(t.name, columns, tuple(pk.group(1).split(",")), description))
    return tuple(tables)
