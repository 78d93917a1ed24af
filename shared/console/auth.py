"""Who may use the console: users with a role (viewer < operator < admin), passwords kept
only as salted scrypt hashes (memory-hard), sessions whose cookie is a random token signed
with the console's key (only the token's SHA-256 is stored), a CSRF token per session, and
a limit on failed logins per address."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass

from shared.core.errors import DbIntegrityError, IppError
from shared.db.database import Database
from shared.db.queries import Q

ROLES = ("viewer", "operator", "admin")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
MIN_PASSWORD = 8
#: scrypt's cost: 16 MiB and some tens of milliseconds per check on this kind of host.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
#: Failed logins allowed per address in a window, then 429 until it passes.
LOGIN_FAILURES, LOGIN_WINDOW_S = 5, 60.0


class ConsoleError(IppError):
    """A console request or account that is not valid; the message says why."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 << 20)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=64 << 20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), key)


def may(role: str, needed: str) -> bool:
    """Whether a role may do what ``needed`` may (roles are ordered)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


async def add_user(db: Database, name: str, role: str, password: str) -> None:
    if not NAME.match(name):
        raise ConsoleError(f"user name {name!r} is not valid (letters, digits, _ . -; at most 64)")
    if role not in ROLES:
        raise ConsoleError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ConsoleError(f"a password needs at least {MIN_PASSWORD} characters")
    try:
        await db.execute(Q.console_user_add, name=name, role=role, hash=hash_password(password))
    except DbIntegrityError:
        raise ConsoleError(f"user {name!r} exists already") from None


async def authenticate(db: Database, name: str, password: str) -> str | None:
    """The user's role if the password is right, else None (the same work either way)."""
    row = await db.fetch_one(Q.console_user_get, name=name)
    stored = str(row["password_hash"]) if row else hash_password("not a user")
    ok = check_password(password, stored)
    return str(row["role"]) if row and ok else None


async def console_key(db: Database) -> bytes:
    """The key sessions are signed with, made once per database."""
    await db.execute(Q.console_key_add, secret=secrets.token_hex(32))
    return bytes.fromhex(str(await db.fetch_val(Q.console_key_get)))


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sessions in the database, named by signed cookies."""

    def __init__(self, db: Database, key: bytes, hours: float) -> None:
        self.db = db
        self.key = key
        self.hours = hours

    def _sign(self, token: str) -> str:
        return f"{token}.{hmac.new(self.key, token.encode(), hashlib.sha256).hexdigest()}"

    def _token(self, cookie: str) -> str | None:
        token = cookie.partition(".")[0]
        if not token or not hmac.compare_digest(self._sign(token), cookie):
            return None
        return token

    async def create(self, user: str, role: str, remote: str | None) -> tuple[str, Session]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_hex(32)
        await self.db.execute(
            Q.console_session_add, token=_sha(token), user=user, csrf=csrf, remote=remote, hours=self.hours
        )
        return self._sign(token), Session(user, role, csrf)

    async def get(self, cookie: str | None) -> Session | None:
        token = self._token(cookie) if cookie else None
        if token is None:
            return None
        row = await self.db.fetch_one(Q.console_session_get, token=_sha(token))
        return Session(str(row["user"]), str(row["role"]), str(row["csrf"])) if row else None

    async def end(self, cookie: str | None) -> None:
        token = self._token(cookie) if cookie else None
        if token is not None:
            await self.db.execute(Q.console_session_end, token=_sha(token))


class LoginLimiter:
    """At most ``LOGIN_FAILURES`` failed logins per address in ``LOGIN_WINDOW_S``."""

    def __init__(self, failures: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S) -> None:
        self.failures = failures
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, remote: str) -> deque[float]:
        now = time.monotonic()
        seen = self._seen.setdefault(remote, deque())
        while seen and now - seen[0] > self.window_s:
            seen.popleft()
        if len(self._seen) > 10_000:  # bounded: forget addresses with nothing recent
            for key in [k for k, v in self._seen.items() if not v]:
                del self._seen[key]
        return seen

    def allowed(self, remote: str) -> bool:
        return len(self._recent(remote)) < self.failures

    def failed(self, remote: str) -> None:
        self._recent(remote).append(time.monotonic())
