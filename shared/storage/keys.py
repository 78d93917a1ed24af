"""``neb://`` keys (REFERENCE 5): a volume preference and the object's canonical path."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from shared.core.errors import (
    BadKey,
)

SCHEME = "neb://"
VOLUME_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
#: Anything but printable, non-space ASCII.
_BAD_CHAR = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True)
class NebKey:
    """A parsed, canonical ``neb://`` key."""

    path: str
    volume: str | None = None
    required: bool = False

    def __str__(self) -> str:
        if self.volume is None:
            return f"{SCHEME}/{self.path}"
        return f"{SCHEME}{'~' if self.required else ''}{self.volume}/{self.path}"

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=1 << 16)
def parse_key(text: str) -> NebKey:
    """Parse and canonicalise a key; BadKey names the key and what is wrong with it.

    Repeated and trailing ``/`` and ``.`` segments are folded away; ``..``, whitespace,
    control and non-ASCII characters are refused. Results are cached (a batch meets the
    same key several times); a refused key is checked again each time.
    """
    if not isinstance(text, str) or not text.startswith(SCHEME):
        raise BadKey(f"storage key {text!r} does not start with {SCHEME}")
    bad = _BAD_CHAR.search(text)
    if bad:
        if bad.group().isspace():
            raise BadKey(f"storage key {text!r} contains whitespace")
        raise BadKey(f"storage key {text!r} contains a control or non-ASCII character")
    rest = text[len(SCHEME) :]
    volume_part, sep, path_part = rest.partition("/")
    if not sep:
        raise BadKey(f"storage key {text!r} has no path after the volume")
    required = volume_part.startswith("~")
    volume: str | None = volume_part[1:] if required else volume_part
    if volume in ("", "any"):
        if required:
            raise BadKey(f"storage key {text!r}: '~' must be followed by a volume name")
        volume = None
    elif volume is not None and not VOLUME_NAME.match(volume):
        raise BadKey(f"storage key {text!r}: bad volume name {volume!r}")
    segments = [s for s in path_part.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise BadKey(f"storage key {text!r}: '..' is not allowed in a path")
    if not segments:
        raise BadKey(f"storage key {text!r} has an empty path")
    return NebKey(path="/".join(segments), volume=volume, required=required)
