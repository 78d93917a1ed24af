"""Secrets read from files, never from a command line (where ``ps`` and shell history show
them): one line of printable ASCII, of a bounded size, in a file that is not world-readable."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from shared.core.errors import IppError

#: Longer than any token or password in use; a file past it is not a secret file.
MAX_SECRET_BYTES = 1024
#: RFC 6750's token68 (what a bearer token may hold), which covers a password too.
SECRET = re.compile(r"^[A-Za-z0-9._~+/=-]+\Z")


class SecretFileError(IppError):
    """A secret file that cannot be used; the message names it and says why (never its content)."""


def read_secret_file(path: str | Path, what: str) -> str:
    """The secret in ``path``: the file's one line without its line end."""
    p = Path(path)
    try:
        info = p.stat()
    except OSError as exc:
        raise SecretFileError(f"{what} file {p}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretFileError(f"{what} file {p}: not a regular file")
    if info.st_mode & stat.S_IROTH:
        raise SecretFileError(
            f"{what} file {p}: readable by every user (mode {stat.filemode(info.st_mode)}); chmod 600 it"
        )
    if info.st_size > MAX_SECRET_BYTES:
        raise SecretFileError(
            f"{what} file {p}: {info.st_size} bytes, more than a secret ({MAX_SECRET_BYTES})"
        )
    try:
        text = p.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError):
        raise SecretFileError(f"{what} file {p}: not ASCII text") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretFileError(f"{what} file {p}: empty")
    if not SECRET.match(value):
        raise SecretFileError(
            f"{what} file {p}: must be one line of letters, digits and ._~+/=- (no spaces or line breaks)"
        )
    return value
