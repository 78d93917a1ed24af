"""The IPP mdc (metadata config) text format: a reader and a writer (REFERENCE 4).

A document is a :class:`Block`: an ordered list of ``(name, item)`` entries where an item is a
:class:`Scalar`, a :class:`Vector` or a nested :class:`Block`. The reader never evaluates its
input; every error names the source and the line number.

What it accepts follows the IPP's grammar (``PS-IPP-Metadata-Config/config_grammar.txt``):
the types S8..U64, F32, F64, C32, C64, BOOL (T, F, TRUE, FALSE in any case; 1 and 0 as
psLib's C reader takes them), STR and STRING,
and the times UTC, UT1, TAI and TT (ISO 8601 with no space inside, NULL for none); ``TYPE
name field ...`` declares a typedef for its block (not for blocks nested in it), and ``key
name word ...`` then makes a block of STR fields; a name may occur more than once in a block
only if the block declared it ``name MULTI`` before its first use: otherwise, as the IPP does,
the first one is kept and the others are dropped with a warning (:attr:`Block.warnings`).
NULL numbers are this project's own (database exports).

Layout written (as psLib writes it): ``%-15s  %-8s  %-15s`` for name, type and value, then
``  # comment``; nested blocks as ``name  METADATA`` ... ``END`` with inner lines indented by
3 spaces; vectors as ``@name TYPE v1 v2 ...``; F32 as ``%.7g``, F64 as ``%.15g``, BOOL as
T/F, NULL strings and times as ``NULL``, times as ISO 8601 UTC.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.errors import MdcError

INT_RANGES: dict[str, tuple[int, int]] = {
    "S8": (-(2**7), 2**7 - 1),
    "S16": (-(2**15), 2**15 - 1),
    "S32": (-(2**31), 2**31 - 1),
    "S64": (-(2**63), 2**63 - 1),
    "U8": (0, 2**8 - 1),
    "U16": (0, 2**16 - 1),
    "U32": (0, 2**32 - 1),
    "U64": (0, 2**64 - 1),
}
FLOAT_TYPES = ("F32", "F64", "C32", "C64")
TIME_TYPES = ("UTC", "UT1", "TAI", "TT")
SCALAR_TYPES = (*INT_RANGES, *FLOAT_TYPES, "BOOL", "STR", "STRING", *TIME_TYPES)
VECTOR_TYPES = (*INT_RANGES, *FLOAT_TYPES, "BOOL")
#: Words the grammar reserves: never an entry's name.
RESERVED = ("METADATA", "END", "TYPE")
#: An ISO 8601 time as the grammar takes it: no space inside, Z or nothing for the zone.
_TIME = re.compile(r"^(\d{4})-?(\d\d)-?(\d\d)T?(\d\d):?(\d\d):?(\d\d)(?:[.,](\d+))?Z?\Z")
_NAME = re.compile(r"^[A-Za-z0-9_][.A-Za-z0-9_-]*\Z")
_INT = re.compile(r"^[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)\Z")
_FLOAT = re.compile(r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|nan|inf|infinity)\Z", re.IGNORECASE)


@dataclass(frozen=True)
class Scalar:
    type: str
    value: Any
    comment: str | None = None


@dataclass(frozen=True)
class Vector:
    type: str
    values: tuple[Any, ...]
    comment: str | None = None


@dataclass
class Block:
    """An ordered METADATA block; ``multi`` holds the names declared with ``name MULTI``."""

    entries: list[tuple[str, Item]] = field(default_factory=list)
    multi: list[str] = field(default_factory=list)
    comment: str | None = None
    #: What the reader dropped, a line each (filled on the document's top block).
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, item: Item) -> None:
        """Append an entry; a repeated name is declared MULTI automatically."""
        if any(n == name for n, _ in self.entries) and name not in self.multi:
            self.multi.append(name)
        self.entries.append((name, item))

    def get(self, name: str) -> Item | None:
        return next((item for n, item in self.entries if n == name), None)

    def set(self, name: str, item: Item) -> None:
        """Replace the first entry called ``name`` (KeyError if there is none)."""
        for i, (n, _) in enumerate(self.entries):
            if n == name:
                self.entries[i] = (name, item)
                return
        raise KeyError(name)

    def get_all(self, name: str) -> list[Item]:
        return [item for n, item in self.entries if n == name]

    def value(self, name: str, default: Any = None) -> Any:
        """The value of a scalar entry (or the default when absent)."""
        item = self.get(name)
        if item is None:
            return default
        if not isinstance(item, Scalar):
            raise MdcError(f"entry {name} is a {type(item).__name__}, not a scalar")
        return item.value

    def __iter__(self) -> Iterator[tuple[str, Item]]:
        return iter(self.entries)


Item = Scalar | Vector | Block


# -- reading -------------------------------------------------------------------------------


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.number = 0
        self.line = ""

    def error(self, problem: str) -> MdcError:
        shown = self.line.strip()
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return MdcError(f"{self.source}:{self.number}: {problem}: {shown!r}")

    def parse_int(self, kind: str, text: str, name: str) -> int:
        if not _INT.match(text):
            raise self.error(f"{name}: {text!r} is not a {kind} integer")
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        value = sign * int(body, 16 if body.lower().startswith("0x") else 10)
        low, high = INT_RANGES[kind]
        if not low <= value <= high:
            raise self.error(f"{name}: {value} is outside the {kind} range {low}..{high}")
        return value

    def parse_float(self, kind: str, text: str, name: str) -> float:
        if not _FLOAT.match(text):
            raise self.error(f"{name}: {text!r} is not a {kind} number")
        value = float(text)
        if kind == "F32":
            try:
                rounded = struct.unpack("f", struct.pack("f", value))[0]
            except OverflowError:
                rounded = math.inf
            if math.isinf(rounded) and not math.isinf(value):
                raise self.error(f"{name}: {text} is outside the F32 range")
            value = rounded
        return value

    def parse_scalar(self, kind: str, text: str, name: str) -> Any:
        if kind in (*INT_RANGES, *FLOAT_TYPES) and text.upper() == "NULL":
            return None  # a NULL number (database exports); psLib itself has none
        if kind in INT_RANGES:
            return self.parse_int(kind, text, name)
        if kind in FLOAT_TYPES:
            return self.parse_float(kind, text, name)
        if kind == "BOOL":
            lowered = text.lower()
            if lowered in ("t", "true", "1"):  # 1 and 0 as psLib's C reader takes them
                return True
            if lowered in ("f", "false", "0"):
                return False
            raise self.error(f"{name}: {text!r} is not a BOOL (T or F)")
        if kind in ("STR", "STRING"):
            return None if text.lower() == "null" else text
        # UTC / UT1 / TAI / TT
        if text == "NULL":
            return None
        return self.parse_time(kind, text, name)

    def parse_time(self, kind: str, text: str, name: str) -> datetime:
        found = _TIME.match(text)
        if found is None:
            raise self.error(f"{name}: {text!r} is not an ISO 8601 {kind} time (no space inside)")
        *parts, fraction = found.groups()
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        try:
            year, month, day, hour, minute, second = (int(p) for p in parts)
            return datetime(year, month, day, hour, minute, second, micro)
        except ValueError as exc:
            raise self.error(f"{name}: {text!r} is not a valid time: {exc}") from None


#: Blocks nest at most this deep (the IPP's own files nest a few levels): deeper input is
#: refused instead of exhausting the writer's recursion or the reader's memory.
MAX_DEPTH = 64


@dataclass
class _Scope:
    """One open block while reading: its names so far and its typedefs."""

    block: Block
    name: str
    opened: int
    names: set[str] = field(default_factory=set)
    types: dict[str, tuple[str, ...]] = field(default_factory=dict)


def loads(text: str, source: str = "<mdc>") -> Block:
    """Parse mdc text into a :class:`Block`; MdcError names the line and the problem.
    Linear in the size of the text (names are looked up in a set per block)."""
    reader = _Reader(source)
    root = Block()
    stack = [_Scope(root, "", 0)]
    # Lines end at "\n" only (str.splitlines would also break at \x85, \u2028 ...).
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        reader.number, reader.line = number, line
        if "\x00" in line:
            raise reader.error("NUL byte in the line")
        code, hash_sign, comment_text = line.partition("#")
        comment = comment_text.strip() or None if hash_sign else None
        tokens = code.split(None, 2)
        if tokens:
            _statement(reader, root, stack, tokens, comment)
    if len(stack) > 1:
        raise MdcError(f"{source}:{stack[-1].opened}: METADATA block {stack[-1].name!r} has no END")
    return root


def _statement(
    reader: _Reader, root: Block, stack: list[_Scope], tokens: list[str], comment: str | None
) -> None:
    """One non-empty line."""
    scope = stack[-1]
    name = tokens[0]
    if name == "END" and len(tokens) == 1:
        if len(stack) == 1:
            raise reader.error("END without an open METADATA block")
        stack.pop()
        return
    if name == "TYPE":
        _typedef(reader, scope, tokens)
        return
    is_vector = name.startswith("@")
    bare = name[1:] if is_vector else name
    if not _NAME.match(bare) or bare.upper() in RESERVED:
        raise reader.error(f"bad name {name!r}")
    if len(tokens) < 2:
        raise reader.error(f"{bare}: missing type")
    kind = tokens[1]
    rest = tokens[2].strip() if len(tokens) > 2 else ""
    if kind.upper() == "MULTI" and not is_vector:
        if rest:
            raise reader.error(f"{bare}: unexpected text after MULTI")
        if bare in scope.block.multi:
            raise reader.error(f"{bare}: MULTI declared twice")
        if bare in scope.names:
            raise reader.error(f"{bare}: MULTI declared after {bare} was used")
        scope.block.multi.append(bare)
        return
    item = _item(reader, stack, bare, kind, rest, comment, is_vector)
    if item is None:
        return
    if bare in scope.names and bare not in scope.block.multi:
        # the first one is kept; a repeated block is still read to its END, then dropped
        root.warnings.append(
            f"{reader.source}:{reader.number}: {bare} repeated without MULTI: "
            "the first one is kept (as the IPP does)"
        )
        return
    scope.names.add(bare)
    scope.block.entries.append((bare, item))


def _typedef(reader: _Reader, scope: _Scope, tokens: list[str]) -> None:
    """``TYPE name field field ...``: a typedef for this block only."""
    words = " ".join(tokens[1:]).split()
    if len(words) < 2:
        raise reader.error("TYPE needs a name and at least one field")
    type_name, fields = words[0], tuple(words[1:])
    if not _NAME.match(type_name) or type_name.upper() in RESERVED:
        raise reader.error(f"bad TYPE name {type_name!r}")
    if type_name in scope.types:
        raise reader.error(f"TYPE {type_name} declared twice")
    scope.types[type_name] = fields


def _item(
    reader: _Reader,
    stack: list[_Scope],
    bare: str,
    kind: str,
    rest: str,
    comment: str | None,
    is_vector: bool,
) -> Item | None:
    """The entry a line makes; a METADATA line opens its block (and returns it)."""
    scope = stack[-1]
    if kind.upper() == "METADATA" and not is_vector:
        if rest:
            raise reader.error(f"{bare}: unsupported METADATA directive {rest!r}")
        if len(stack) > MAX_DEPTH:
            raise reader.error(f"blocks nested deeper than {MAX_DEPTH}")
        block = Block(comment=comment)
        stack.append(_Scope(block, bare, reader.number))
        return block
    if is_vector:
        if kind not in VECTOR_TYPES:
            raise reader.error(f"{bare}: vector type must be one of {' '.join(VECTOR_TYPES)}")
        values = tuple(reader.parse_scalar(kind, v, bare) for v in re.split(r"[,\s]+", rest) if v)
        return Vector(kind, values, comment)
    if kind in scope.types:
        fields = scope.types[kind]
        words = rest.split()
        if len(words) != len(fields):
            raise reader.error(f"{bare} {kind}: TYPE {kind} has {len(fields)} fields, the line {len(words)}")
        return Block([(f, Scalar("STR", w)) for f, w in zip(fields, words, strict=True)], comment=comment)
    if kind not in SCALAR_TYPES:
        raise reader.error(f"{bare}: unknown type {kind!r}")
    if not rest:
        raise reader.error(f"{bare}: missing value")
    return Scalar("STR" if kind == "STRING" else kind, reader.parse_scalar(kind, rest, bare), comment)


def load(path: Path) -> Block:
    """Read an mdc file (UTF-8); errors name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MdcError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MdcError(f"{path}: cannot read: {exc.strerror}") from None
    return loads(text, str(path))


# -- writing -------------------------------------------------------------------------------


def _format_value(name: str, item: Scalar) -> str:
    kind, value = item.type, item.value
    if value is None and kind in (*INT_RANGES, *FLOAT_TYPES):
        return "NULL"
    if kind in INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise MdcError(f"{name}: {kind} value must be an integer, got {value!r}")
        low, high = INT_RANGES[kind]
        if not low <= value <= high:
            raise MdcError(f"{name}: {value} is outside the {kind} range {low}..{high}")
        return str(value)
    if kind in FLOAT_TYPES:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MdcError(f"{name}: {kind} value must be a number, got {value!r}")
        return _format_float(kind, float(value))
    if kind == "BOOL":
        if not isinstance(value, bool):
            raise MdcError(f"{name}: BOOL value must be True or False, got {value!r}")
        return "T" if value else "F"
    if kind == "STR":
        return _format_str(name, value)
    if kind in TIME_TYPES:
        if value is None:
            return "NULL"
        if not isinstance(value, datetime):
            raise MdcError(f"{name}: {kind} value must be a datetime, got {value!r}")
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{value.microsecond:06d}Z" if value.microsecond else "Z")
    raise MdcError(f"{name}: unknown type {kind!r}")


def _format_float(kind: str, value: float) -> str:
    if math.isnan(value):
        return "nan"
    return ("%.7g" if kind == "F32" else "%.15g") % value


def _format_str(name: str, value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "NULL"
    if not isinstance(value, str):
        raise MdcError(f"{name}: STR value must be a string, got {value!r}")
    if "#" in value or "\n" in value or "\r" in value or "\x00" in value:
        raise MdcError(f"{name}: string {value!r} cannot be written in mdc (contains #, a line break or NUL)")
    if value != value.strip():
        raise MdcError(f"{name}: string {value!r} has leading or trailing white space, which mdc cannot keep")
    if value.lower() == "null":
        raise MdcError(f"{name}: the string {value!r} would be read back as NULL")
    return value


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name == "END":
        raise MdcError(f"name {name!r} cannot be written in mdc")


def _check_comment(name: str, comment: str | None) -> str:
    """The ``  # comment`` suffix; comments are stripped, blank ones omitted."""
    if not comment or not comment.strip():
        return ""
    if "\n" in comment or "\r" in comment:
        raise MdcError(f"{name}: comment contains a line break")
    return f"  # {comment.strip()}"


def _format_block(block: Block, indent: str) -> list[str]:
    lines: list[str] = []
    announced: set[str] = set()
    names = Counter(n for n, _ in block.entries)
    for name in block.multi:
        if name not in names:
            lines.append(f"{indent}{name} MULTI")
            announced.add(name)
    for name, item in block.entries:
        _check_name(name)
        if name in block.multi and name not in announced:
            lines.append(f"{indent}{name} MULTI")
            announced.add(name)
        elif names[name] > 1 and name not in block.multi:
            raise MdcError(f"{name} occurs more than once but is not declared MULTI")
        if isinstance(item, Block):
            lines.append(f"{indent}{name}  METADATA{_check_comment(name, item.comment)}")
            lines.extend(_format_block(item, indent + "   "))
            lines.append(f"{indent}END")
        elif isinstance(item, Vector):
            if item.type not in VECTOR_TYPES:
                raise MdcError(f"{name}: vector type {item.type!r} is not supported")
            values = " ".join(_format_value(name, Scalar(item.type, v)) for v in item.values)
            line = f"{indent}@{name} {item.type} {values}".rstrip()
            lines.append(line + _check_comment(name, item.comment))
        else:
            value = _format_value(name, item)
            line = f"{indent}{name:<15s}  {item.type:<8s}  {value:<15s}"
            comment = _check_comment(name, item.comment)
            lines.append((line + comment) if comment else line.rstrip())
    return lines


def dumps(block: Block) -> str:
    """Write a block as mdc text; MdcError names any value mdc cannot represent."""
    return "\n".join(_format_block(block, "")) + "\n"


def dump(block: Block, path: Path) -> None:
    path.write_text(dumps(block), encoding="utf-8")
