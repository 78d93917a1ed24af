"""The DataStore (REFERENCE 6): products, filesets and files, and their ``index.txt`` listings.

The server side (tables, registration in one transaction, the listings byte for byte) and the
client side (parsing a listing strictly: any malformed line, unknown file type, bad size or
md5 is an error naming the line) live here together so both ends agree on one format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.core.errors import IppError
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q
from shared.storage.store import Storage

#: The types the IPP's own DataStore client knows (``DataStore/lib/DataStore/Utils.pm``,
#: %KNOWN_*_TYPES): it drops a listing line of any other type, so this server registers only
#: these.
PRODUCT_TYPES = (
    "image", "dump", "psrequest", "psresults", "table", "ipp-dist", "ipp-misc", "dqresults",
    "IPP-MOPS", "IPP-PSPS", "PSRESULTS",
)  # fmt: skip
FILESET_TYPES = (
    "OBJECT", "BIAS", "DARK", "SKYFLAT", "DOMEFLAT", "OOF", "SHACKHARTMANN", "PSREQUEST",
    "PSRESULTS", "IPP-MOPS", "XRAY", "FOCUS", "MOPS_DETECTABILITY_QUERY",
    "MOPS_DETECTABILITY_RESPONSE", "MOPS_TRANSIENT_DETECTIONS", "LED", "notset", "IPP_PSPS",
    "IPP-DIST", "table",
)  # fmt: skip
FILE_TYPES = (
    "chip", "psrequest", "psresults", "pstamp", "chipproc", "warp", "stack", "diff", "ipp-mops",
    "table", "text", "xml", "tgz", "fits", "IPP-MOPS", "IPP-PSPS", "ipp-psps", "notset",
)  # fmt: skip
#: Product types earlier versions of this project registered, and the IPP's name for each.
OLD_PRODUCT_TYPES = {"dist": "ipp-dist", "psps": "IPP-PSPS", "other": "ipp-misc"}
#: File types earlier versions of this server listed; the mirror still reads them.
OLD_FILE_TYPES = ("dbinfo", "manifest", "mdc")
#: A distribution fileset's type (``ippScripts/scripts/dist_make_fileset.pl``: dsreg --type).
DIST_FILESET = "IPP-DIST"
#: The client's rule for a file id, fileset and type field (Utils.pm ``$STD_FIELD``, its
#: ``A-z`` read as letters and ``_``: the ASCII range also holds ``[\\]^` ``, refused here).
STD_FIELD = re.compile(r"^[A-Za-z0-9+_.: -]+\Z")
FILE_ID = STD_FIELD
MD5 = re.compile(r"^[0-9a-f]{32}\Z")
#: A size in bytes: ASCII digits only (str.isdigit() also takes '²' and other digits).
SIZE = re.compile(r"^[0-9]{1,18}\Z")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")
#: A product description: one line, none of the listing's '|' and '#' (the client drops a
#: line with '#' in any field), at most dsProduct.description's width.
DESCRIPTION = re.compile(r"^[^|#\x00-\x1f\x7f]{0,255}\Z")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: The labels a product may give its columns (prod_col_0..7).
MAX_COLUMNS = 8
#: The type-specific columns of a file (type_col_0..3, as ``dsfsindex`` prints them).
MAX_TYPE_COLUMNS = 4

PRODUCT_HEADER = ("productID", "Most recent", "Time registered", "type", "Description")
FILESET_HEADER = ("filesetID", "time registered", "type")
FILE_HEADER = ("fileID", "bytes", "md5sum", "type")
#: ``DataStoreServer/scripts/dsrootindex``: its header line and fixed field widths.
ROOT_LINE = "# productID  |Most recent |Time registered     |type     |Description                     |"
ROOT_WIDTHS = (13, 12, 20, 9, 32)
#: ``DataStoreServer/scripts/dsfsindex``: its header (then 8 wide per type column) and widths.
FILE_LINE = "# fileID          |bytes   |md5sum                          |type        |"
FILE_WIDTHS = (18, 8, 32, 12)
TYPE_COLUMN_WIDTH = 8


class DataStoreError(IppError):
    """A DataStore operation or listing that is not valid; names the item and the problem."""


class NotFound(DataStoreError):
    """An unknown product, fileset or file."""


def ds_time(when: datetime | None) -> str:
    return when.strftime(TIME_FORMAT) if when is not None else "null"


def format_listing(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An ``index.txt``: a ``#`` header line, then one line per row; every field is padded to
    its column's width (the widest of label and values) and ends with ``|``."""
    labels = [f"# {header[0]}", *header[1:]]
    cells = [["null" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(label)] + [len(r[i]) for r in cells]) for i, label in enumerate(labels)]
    lines = ["".join(f"{label:<{w}}|" for label, w in zip(labels, widths, strict=True))]
    lines += ["".join(f"{v:<{w}}|" for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Listing:
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


def parse_listing(text: str, first: str, source: str) -> Listing:
    """Parse an ``index.txt`` whose first column is ``first``; DataStoreError on any line
    that is not a well-formed row of the header's columns."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#"):
        raise DataStoreError(f"{source}: no '#' header line")
    header = _fields(lines[0][1:], source, 1)
    if not header or header[0] != first:
        raise DataStoreError(f"{source}: header starts with {header[:1]!r}, expected {first!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = _fields(line, source, number)
        if len(fields) != len(header):
            raise DataStoreError(
                f"{source}:{number}: {len(fields)} fields, the header has {len(header)}: {line[:120]!r}"
            )
        rows.append(fields)
    return Listing(header, rows)


def _fields(line: str, source: str, number: int) -> tuple[str, ...]:
    if not line.endswith("|"):
        raise DataStoreError(f"{source}:{number}: a line must end with '|': {line[:120]!r}")
    return tuple(f.strip() for f in line[:-1].split("|"))


@dataclass(frozen=True)
class RemoteFile:
    name: str
    bytes: int
    md5sum: str
    type: str
    #: The fifth column of an IPP distribution listing (``dsfsindex``): the run's component.
    component: str | None = None


def parse_files(text: str, source: str) -> list[RemoteFile]:
    """A fileset's file list, every value checked (REFERENCE 6).

    As the IPP's ``dsfsindex`` prints it: a ``#`` header line, printed again whenever the
    next files' type has other type-specific columns; each file line has fileID, bytes,
    md5sum and type, then that type's columns, of which the first is the component
    (``component``, or ``chipname`` for type chip). A line may stop before its header's last
    columns (``dsfsindex`` prints a type column only when it has a value); the IPP's client
    reads at least those four fields (``DataStore/lib/DataStore/File/Parser.pm``)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#"):
        raise DataStoreError(f"{source}: no '#' header line")
    header: tuple[str, ...] = ()
    files: list[RemoteFile] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            header = _file_header(line, source, number)
            continue
        fields = _fields(line, source, number)
        if not len(FILE_HEADER) <= len(fields) <= len(header):
            raise DataStoreError(
                f"{source}:{number}: {len(fields)} fields, the header has {len(header)}: {line[:120]!r}"
            )
        f = _remote_file(fields, f"{source}:{number}")
        if f.name in seen:
            raise DataStoreError(f"{source}: file {f.name!r} listed twice")
        seen.add(f.name)
        files.append(f)
    return files


def _file_header(line: str, source: str, number: int) -> tuple[str, ...]:
    header = _fields(line[1:], source, number)
    if header[: len(FILE_HEADER)] != FILE_HEADER:
        raise DataStoreError(
            f"{source}:{number}: file listing columns {header}, expected {FILE_HEADER} and any extra columns"
        )
    return header


def _remote_file(fields: tuple[str, ...], where: str) -> RemoteFile:
    name, size, md5, kind, *extra = fields
    where = f"{where}: file {name!r}"
    if not FILE_ID.match(name) or name in (".", "..") or "/" in name:
        raise DataStoreError(f"{where}: not a valid file id")
    if not SIZE.match(size):
        raise DataStoreError(f"{where}: bytes {size!r} is not a number")
    if not MD5.match(md5):
        raise DataStoreError(f"{where}: md5sum {md5!r} is not 32 lowercase hex digits")
    if kind not in FILE_TYPES and kind not in OLD_FILE_TYPES:
        raise DataStoreError(f"{where}: unknown file type {kind!r} (known: {', '.join(FILE_TYPES)})")
    component = extra[0] if extra and extra[0] not in ("", "null", "none") else None
    if component is not None and not STD_FIELD.match(component):
        raise DataStoreError(f"{where}: component {component!r} is not a valid field")
    return RemoteFile(name, int(size), md5, kind, component)


def parse_filesets(text: str, source: str) -> list[str]:
    """The fileset names of a product listing, in order; a name listed twice is an error."""
    listing = parse_listing(text, "filesetID", source)
    names: list[str] = []
    seen: set[str] = set()
    for row in listing.rows:
        if row[0] in seen:
            raise DataStoreError(f"{source}: fileset {row[0]!r} listed twice")
        seen.add(row[0])
        names.append(row[0])
    return names


# -- the server's tables -------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise DataStoreError(f"{kind} name {name!r} is not valid (letters, digits, _ . + -; at most 128)")
    return name


def product_type(kind: str) -> str:
    """The IPP's name of a product type; the names earlier versions used are read as theirs."""
    kind = OLD_PRODUCT_TYPES.get(kind, kind)
    if kind not in PRODUCT_TYPES:
        raise DataStoreError(
            f"product type {kind!r} is not one the IPP's DataStore client knows: {', '.join(PRODUCT_TYPES)}"
        )
    return kind


def fileset_type(kind: str) -> str:
    """A fileset type the IPP's client lists (it drops a fileset of any other type)."""
    if kind not in FILESET_TYPES:
        raise DataStoreError(
            f"fileset type {kind!r} is not one the IPP's DataStore client knows: {', '.join(FILESET_TYPES)}"
        )
    return kind


async def add_product(
    db: Database, name: str, kind: str, description: str | None, columns: Sequence[str]
) -> int:
    """Add a product, as ``dsprodtool --add NAME --type T --description D --ps0..7`` does."""
    check_name("product", name)
    kind = product_type(kind)
    if description is not None and not DESCRIPTION.match(description):
        raise DataStoreError(
            f"product description {description[:80]!r} is not valid (one line of at most 255 "
            "characters without '|' or '#')"
        )
    if len(columns) > MAX_COLUMNS:
        raise DataStoreError(f"a product has at most {MAX_COLUMNS} columns, got {len(columns)}")
    for c in columns:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,31}\Z", c):
            raise DataStoreError(f"product column {c!r} is not a valid label")
    if await db.fetch_one(Q.ds_product_get, name=name) is not None:
        raise DataStoreError(f"product {name!r} exists already")
    cols = {f"col{i}": (columns[i] if i < len(columns) else None) for i in range(MAX_COLUMNS)}
    return await db.insert(Q.ds_product_add, name=name, type=kind, description=description, **cols)


async def product(db: Database | Tx, name: str) -> Row:
    """The product of exactly this name: names are case-sensitive, as the paths of a web
    server are, though the database compares them without case (``Prod`` is not ``prod``)."""
    row = await db.fetch_one(Q.ds_product_get, name=name)
    if row is None or row["prod_name"] != name:
        raise NotFound(f"no product {name!r}")
    return row


async def fileset_row(db: Database | Tx, prod_id: int, name: str) -> Row | None:
    """The product's fileset of exactly this name (case-sensitive, as :func:`product`)."""
    row = await db.fetch_one(Q.ds_fileset_get, prod_id=prod_id, name=name)
    return row if row is not None and row["fileset_name"] == name else None


def product_columns(prod: Row) -> list[str]:
    return [prod[f"prod_col_{i}"] for i in range(MAX_COLUMNS) if prod[f"prod_col_{i}"]]


def _padded(values: Sequence[str], widths: Sequence[int]) -> str:
    """Each value left-justified to at least its width, then ``|`` (Perl's ``%-Ns|``)."""
    return "".join(f"{v:<{w}}|" for v, w in zip(values, widths, strict=True))


async def root_listing(db: Database) -> str:
    """The products, as the IPP's ``dsrootindex`` prints them: its header, its fixed widths,
    ordered by type, and ``none`` for a product with no fileset yet (the client's
    ``$STD_FIELD`` refuses an empty one)."""
    lines = [ROOT_LINE]
    for r in await db.fetch_all(Q.ds_products):
        values = (
            r["prod_name"],
            r["last_fs"] or "none",
            ds_time(r["last_update"] or r["reg_time"]),
            r["type"],
            r["description"] or "",
        )
        lines.append(_padded(values, ROOT_WIDTHS))
    return "\n".join(lines) + "\n"


async def product_listing(db: Database, name: str, after: str | None = None) -> str:
    """A product's filesets (only those registered after ``after``, if given), as the IPP's
    ``dsprodindex`` prints them: every column as wide as its widest value or label."""
    prod = await product(db, name)
    after_id = 0
    if after:
        row = await fileset_row(db, prod["prod_id"], after)
        if row is None:
            raise NotFound(f"product {name!r} has no fileset {after!r}")
        after_id = int(row["fileset_id"])
    cols = product_columns(prod)
    rows = await db.fetch_all(Q.ds_filesets, prod_id=prod["prod_id"], after_id=after_id)
    return format_listing(
        (*FILESET_HEADER, *cols),
        [
            (
                r["fileset_name"],
                ds_time(r["reg_time"]),
                r["type"],
                *(r[f"prod_col_{i}"] for i in range(len(cols))),
            )
            for r in rows
        ],
    )


async def fileset_files(db: Database, prod_name: str, fileset: str) -> list[Row]:
    prod = await product(db, prod_name)
    row = await fileset_row(db, prod["prod_id"], fileset)
    if row is None or row["hide"]:
        raise NotFound(f"product {prod_name!r} has no fileset {fileset!r}")
    return await db.fetch_all(Q.ds_files, fileset_id=row["fileset_id"])


async def fileset_listing(db: Database, prod_name: str, fileset: str) -> str:
    files = await fileset_files(db, prod_name, fileset)
    labels = {
        r["type"]: [r[f"type_col_{i}"] for i in range(MAX_TYPE_COLUMNS)]
        for r in await db.fetch_all(Q.ds_file_types)
    }
    return format_files(files, labels)


def format_files(files: Sequence[Row], labels: dict[str, list[str | None]]) -> str:
    """A fileset's files as the IPP's ``dsfsindex`` prints them: its header with the labels
    of the type's columns (dsFileType), printed again when the next file's type has other
    labels; each file's type columns up to the first that has no value."""
    lines: list[str] = []
    last_type: str | None = None
    for f in files:
        if f["type"] != last_type:
            last_type = f["type"]
            header = FILE_LINE + "".join(
                f"{label:<{TYPE_COLUMN_WIDTH}}|" for label in _until_none(labels.get(f["type"], []))
            )
            if not lines or header != _last_header(lines):
                lines.append(header)
        values = [f["file_name"], str(f["bytes"]), f["md5sum"], f["type"]]
        extra = _until_none([f[f"type_col_{i}"] for i in range(MAX_TYPE_COLUMNS)])
        lines.append(_padded(values, FILE_WIDTHS) + "".join(f"{v:<{TYPE_COLUMN_WIDTH}}|" for v in extra))
    if not lines:
        lines.append(FILE_LINE)
    return "\n".join(lines) + "\n"


def _until_none(values: Sequence[str | None]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is None:
            break
        out.append(v)
    return out


def _last_header(lines: list[str]) -> str:
    return next(line for line in reversed(lines) if line.startswith("#"))


@dataclass(frozen=True)
class NewFile:
    name: str
    bytes: int
    md5sum: str
    type: str
    uri: str
    #: The file's first type-specific column (``type_col_0``): its component.
    component: str | None = None


async def register_fileset(
    tx: Tx, prod: Row, name: str, kind: str, values: Sequence[Any], files: Sequence[NewFile]
) -> int:
    """Register a complete fileset (its row, its files, the product's last fileset) inside
    the caller's transaction, so it becomes visible all at once."""
    check_name("fileset", name)
    fileset_type(kind)
    for f in files:
        if (
            not FILE_ID.match(f.name)
            or f.type not in FILE_TYPES
            or not MD5.match(f.md5sum)
            or (f.component is not None and not STD_FIELD.match(f.component))
        ):
            raise DataStoreError(f"fileset {name}: file {f.name!r} ({f.type}) is not valid")
    cols = {
        f"col{i}": (None if i >= len(values) or values[i] is None else str(values[i]))
        for i in range(MAX_COLUMNS)
    }
    fileset_id = await tx.insert(Q.ds_fileset_add, prod_id=prod["prod_id"], name=name, type=kind, **cols)
    await tx.execute_many(
        Q.ds_file_add,
        [
            {
                "fileset_id": fileset_id,
                "name": f.name,
                "bytes": f.bytes,
                "md5sum": f.md5sum,
                "type": f.type,
                "uri": f.uri,
                "component": f.component,
            }
            for f in files
        ],
    )
    await tx.execute(Q.ds_product_touch, prod_id=prod["prod_id"], name=name)
    return fileset_id


async def hide_fileset(db: Database, prod_id: int, fileset_id: int) -> None:
    """No client lists the fileset any more, and its product's "most recent" (dsProduct.
    last_fs, in the root listing) moves back to the newest one still listed."""

    async def hide(tx: Tx) -> None:
        await tx.execute(Q.ds_fileset_hide, fileset_id=fileset_id)
        await tx.execute(Q.ds_product_last_refresh, prod_id=prod_id)

    await db.transaction(hide, name="ds_hide")


async def remove_fileset(db: Database, prod_name: str, fileset: str) -> int | None:
    """Hide a fileset, delete its stored files, then forget its rows; returns how many files
    were deleted, or None when the product has no such fileset (already removed).

    Hidden first, so no client starts a download of files about to go. A file on a volume
    that is down leaves the fileset hidden but registered (DataStoreError): run again later.
    """
    prod = await product(db, prod_name)
    row = await fileset_row(db, prod["prod_id"], fileset)
    if row is None:
        return None
    files = await db.fetch_all(Q.ds_files, fileset_id=row["fileset_id"])
    await hide_fileset(db, prod["prod_id"], row["fileset_id"])
    report = await Storage(db).delete_many([f["uri"] for f in files])
    if report.unavailable:
        raise DataStoreError(
            f"{prod_name}/{fileset}: {len(report.unavailable)} files are on a "
            "volume that is down; the fileset stays hidden until it is up"
        )

    async def forget(tx: Tx) -> None:
        await tx.execute(Q.ds_files_delete, fileset_id=row["fileset_id"])
        await tx.execute(Q.ds_fileset_delete, fileset_id=row["fileset_id"])

    await db.transaction(forget, name="ds_remove")
    return len(report.deleted)
