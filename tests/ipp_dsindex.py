"""The IPP DataStore server's listing scripts, as facts of their source
(``DataStoreServer/scripts/dsrootindex``, ``dsprodindex`` and ``dsfsindex`` in
ps-ipp/ipp-trunk-20250502): what each prints from the DataStore tables, so that a test can
compare it byte for byte with what dist_server serves over the same database.

- dsrootindex: ``SELECT * FROM dsProduct ORDER BY type``; its header; per product
  ``%-13s|%-12s|%-20s|%-9s|%-32s|`` of name, last_fs (``none`` when empty), last_update as
  ``date T time Z``, type, description.
- dsprodindex: ``# filesetID``, ``time registered``, ``type`` and each product label up to
  the first undefined one; the filesets (``hide = 0``, after a named one if given, by
  fileset_id), a NULL value printed ``null``; every column as wide as its widest cell, each
  cell ``%-*s|``.
- dsfsindex: its header plus ``%-8s|`` per label of the file type (dsFileType), printed
  again when the type changes and the header with it; per file ``%-18s|%-8s|%-32s|%-12s|``
  then ``%-8s|`` per type column while they are defined; an empty fileset prints the header.
"""

from __future__ import annotations

from typing import Any

from shared.db.database import Database
from shared.db.queries import Query

ROOT_HEADER = "# productID  |Most recent |Time registered     |type     |Description                     |"
FILE_HEADER = "# fileID          |bytes   |md5sum                          |type        |"


def _when(value: Any) -> str:
    """Perl's split of MySQL's 'YYYY-MM-DD HH:MM:SS' at the space, joined with T and Z."""
    date, _, time = str(value).partition(" ")
    return f"{date}T{time}Z"


def _q(sql: str) -> Query:
    return Query("ipp_dsindex", sql, "tests/ipp_dsindex.py")


async def dsrootindex(db: Database) -> str:
    lines = [ROOT_HEADER]
    for r in await db.fetch_all(_q("SELECT * FROM dsProduct ORDER BY type")):
        last = r["last_fs"] or "none"
        lines.append(
            f"{r['prod_name']:<13}|{last:<12}|{_when(r['last_update']):<20}|{r['type']:<9}|{r['description']:<32}|"
        )
    return "\n".join(lines) + "\n"


async def dsprodindex(db: Database, product: str, after: str | None = None) -> str | int:
    """The listing, or the exit status the script gives (5: no product, 404: no such
    fileset to list after)."""
    prod = await db.fetch_one(_q("SELECT * FROM dsProduct WHERE prod_name = %(p)s"), p=product)
    if prod is None:
        return 5
    header = ["# filesetID", "time registered", "type"]
    last = -1
    for i in range(8):
        if prod[f"prod_col_{i}"] is None:
            break
        header.append(str(prod[f"prod_col_{i}"]))
        last = i
    after_id = 0
    if after:
        found = await db.fetch_one(
            _q("SELECT fileset_id FROM dsFileset WHERE prod_id = %(id)s AND fileset_name = %(n)s"),
            id=prod["prod_id"],
            n=after,
        )
        if found is None:
            return 404
        after_id = int(found["fileset_id"])
    rows = [header]
    for r in await db.fetch_all(
        _q(
            "SELECT * FROM dsFileset WHERE prod_id = %(id)s AND hide = 0 AND fileset_id > %(a)s "
            "ORDER BY fileset_id"
        ),
        id=prod["prod_id"],
        a=after_id,
    ):
        cells = [str(r["fileset_name"]), _when(r["reg_time"]), str(r["type"])]
        cells += ["null" if r[f"prod_col_{i}"] is None else str(r[f"prod_col_{i}"]) for i in range(last + 1)]
        rows.append(cells)
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "".join(
        "".join(f"{cell:<{w}}|" for cell, w in zip(row, widths, strict=True)) + "\n" for row in rows
    )


async def dsfsindex(db: Database, product: str, fileset: str) -> str | int:
    prod = await db.fetch_one(_q("SELECT prod_id FROM dsProduct WHERE prod_name = %(p)s"), p=product)
    if prod is None:
        return 5
    fs = await db.fetch_one(
        _q("SELECT fileset_id FROM dsFileset WHERE fileset_name = %(n)s AND prod_id = %(id)s"),
        n=fileset,
        id=prod["prod_id"],
    )
    if fs is None:
        return 5
    types = {r["type"]: r for r in await db.fetch_all(_q("SELECT * FROM dsFileType"))}
    out: list[str] = []
    last_type, last_header, print_header = "", "", True
    for r in await db.fetch_all(
        _q("SELECT * FROM dsFile WHERE fileset_id = %(id)s ORDER BY file_id"), id=fs["fileset_id"]
    ):
        if r["type"] != last_type:
            print_header, last_type = True, r["type"]
        if print_header:
            labels = ""
            for i in range(4):
                label = types.get(r["type"], {}).get(f"type_col_{i}")
                if label is None:
                    break
                labels += f"{label:<8}|"
            if FILE_HEADER + labels != last_header:
                last_header = FILE_HEADER + labels
                out.append(last_header)
            print_header = False
        line = f"{r['file_name']:<18}|{r['bytes']!s:<8}|{r['md5sum']:<32}|{r['type']:<12}|"
        for i in range(4):
            if r[f"type_col_{i}"] is None:
                break
            line += f"{r[f'type_col_{i}']:<8}|"
        out.append(line)
    if print_header:
        out.append(FILE_HEADER)
    return "\n".join(out) + "\n"
