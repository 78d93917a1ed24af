"""The project's own exception types.

Every failure an operator may see derives from :class:`IppError`; its message is one line
that names the input and the problem, so command-line tools can print it as it is. Driver
errors are turned into these at one boundary (:mod:`shared.db.database`).
"""

from __future__ import annotations

import re

_DSN_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^\s]*@")


def mask_dsns(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@...`` in it replaced by
    ``***``, found by its place (up to the last ``@`` of the word), not by parsing: a
    password with an unencoded ``/``, ``#`` or ``?`` does not parse, and must not show."""
    return _DSN_PASSWORD.sub(r"\1***@", text) if "://" in text else text


def one_line(exc: BaseException) -> str:
    """A library's (possibly multi-line) message folded onto one line for our errors."""
    return " ".join(str(exc).split())


class IppError(Exception):
    """Base of every error the project raises on purpose."""


class SettingsError(IppError):
    """A setting (TOML file or ``IPP_*`` variable) is missing, unknown or malformed."""


class DsnError(SettingsError):
    """A database DSN cannot be parsed."""


class DbError(IppError):
    """A database operation failed."""


class DbUnavailable(DbError):
    """The database could not be reached, or the connection was lost and not regained."""


class DbTimeout(DbError):
    """A database call ran past its deadline."""


class DbConflict(DbError):
    """A transaction kept failing on deadlocks (1213) or lock wait timeouts (1205)."""


class DbIntegrityError(DbError):
    """A constraint (unique key, foreign key, NOT NULL, CHECK) refused a write."""


class SchemaMismatch(DbError):
    """The database schema version differs from the one this code was written for."""


class ClaimLost(DbError):
    """A claimed row is no longer owned by this client (the sweeper released it)."""


class PortInUse(IppError):
    """A server cannot listen on its host:port (another process holds it, or it is not ours)."""


class UnknownAgent(IppError):
    """``ipp-agent NAME`` names no known agent."""


class LocalDbError(IppError):
    """The private MariaDB under ``var/`` could not be installed, set up or started."""


class StorageError(IppError):
    """A storage (``neb://``) operation failed."""


class BadKey(StorageError):
    """A ``neb://`` key is malformed."""


class PathEscape(StorageError):
    """A storage path resolves outside its volume root."""


class ObjectExists(StorageError):
    """A storage key is already registered."""


class ObjectNotFound(StorageError):
    """A storage key is not registered."""


class ObjectUnavailable(StorageError):
    """A storage key has instances, but none on a volume that is up right now."""


class ObjectGone(StorageError):
    """Every instance of a storage key sits on a volume marked lost."""


class StorageCorrupt(StorageError):
    """A file's size or md5 differs from what was recorded at creation."""


class MdcError(IppError):
    """An mdc (metadata config) text cannot be parsed or a value cannot be written."""
