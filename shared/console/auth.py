"""Who may use the console: users with a role (viewer < operator < admin), passwords kept
only as salted scrypt hashes (memory-hard), sessions whose cookie is a random token signed
with the console's key (only the token's SHA-256 is stored), a CSRF token per session, and
limits on login attempts counted before any password is checked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from shared.core.errors import DbIntegrityError, IppError
from shared.core.settings import Settings
from shared.db.database import Database, Tx
from shared.db.queries import Q

ROLES = ("viewer", "operator", "admin")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
MIN_PASSWORD = 8
#: An admin's password is longer: it may change every other account.
MIN_ADMIN_PASSWORD = 12
#: Passwords a guesser tries first (and their like): refused whatever their length.
COMMON_PASSWORDS = frozenset(
    {
        "password", "password1", "password123", "passw0rd", "12345678", "123456789", "1234567890",
        "qwertyuiop", "qwerty123", "iloveyou", "admin123", "administrator", "letmein1", "welcome1",
        "changeme", "trustno1", "abcd1234", "11111111", "00000000", "correct horse battery staple",
    }
)  # fmt: skip
#: scrypt's cost as OWASP's password storage guidance gives it (N = 2^17, r = 8, p = 1: 128
#: MiB and a few tenths of a second per hash); hashes of a lower cost still check.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1
SCRYPT_MAXMEM = 256 << 20


class ConsoleError(IppError):
    """A console request or account that is not valid; the message says why."""


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=SCRYPT_MAXMEM)


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
            maxmem=SCRYPT_MAXMEM,
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
    check_password_strength(name, role, password)
    try:
        await db.execute(Q.console_user_add, name=name, role=role, hash=hash_password(password))
    except DbIntegrityError:
        raise ConsoleError(f"user {name!r} exists already") from None


def check_password_strength(name: str, role: str, password: str) -> None:
    """Refuse a password that is short for its role, common, or made of the user's name."""
    least = MIN_ADMIN_PASSWORD if role == "admin" else MIN_PASSWORD
    if len(password) < least:
        raise ConsoleError(f"a password for {role} needs at least {least} characters")
    if password.lower() in COMMON_PASSWORDS or len(set(password)) < 4:
        raise ConsoleError("that password is one guessers try first; choose another")
    if name.lower() in password.lower():
        raise ConsoleError(f"a password may not contain the user name {name!r}")


async def authenticate(db: Database, name: str, password: str) -> str | None:
    """The user's role if the password is right, else None: one scrypt check either way
    (an unknown user is checked against a hash of the same cost), off the event loop."""
    row = await db.fetch_one(Q.console_user_get, name=name)
    stored = str(row["password_hash"]) if row else _UNKNOWN_USER_HASH
    async with _CHECKS:
        ok = await asyncio.to_thread(check_password, password, stored)
    return str(row["role"]) if row and ok else None


#: What an unknown user's password is checked against: the cost of a real one, no match.
_UNKNOWN_USER_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * 32}"


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


@dataclass(frozen=True)
class LoginLimits:
    """How many login attempts a window takes, per scope."""

    window_s: float = 60.0
    per_user_address: int = 5
    per_user: int = 20
    per_address: int = 50

    @classmethod
    def from_settings(cls, s: Settings) -> LoginLimits:
        return cls(
            s.console_login_window_s,
            s.console_login_max_per_user_address,
            s.console_login_max_per_user,
            s.console_login_max_per_address,
        )


class LoginLimiter:
    """Login attempts counted in the database before any password is checked, so a burst
    (of one console process or several) gets no more checks than the limit: an address and
    user pair, a user from anywhere, and an address for any user each have their own."""

    def __init__(self, db: Database, limits: LoginLimits) -> None:
        self.db = db
        self.limits = limits
        self._calls = 0

    async def admit(self, address: str, user: str) -> str | None:
        """None if this attempt may check its password; else why it is refused."""
        lim = self.limits
        scopes = (
            (
                f"user+address {user} {address}",
                lim.per_user_address,
                "too many logins for this user from here",
            ),
            (f"user {user}", lim.per_user, "too many logins for this user"),
            (f"address {address}", lim.per_address, "too many logins from here"),
        )

        async def count(tx: Tx) -> str | None:
            refused = None
            for scope, most, why in scopes:  # always in this order: no deadlock between them
                await tx.execute(Q.console_login_count, scope=scope, window_s=lim.window_s)
                if refused is None and int(await tx.fetch_val(Q.console_login_attempts, scope=scope)) > most:
                    refused = why
            return refused

        self._calls += 1
        if self._calls % 100 == 0:
            await self.db.execute(Q.console_login_forget, window_s=lim.window_s)
        return await self.db.transaction(count, name="console_login_count")


#: At most this many password checks at once (each takes 16 MiB and tens of ms of a core),
#: on threads, so that the event loop keeps answering other requests during a burst.
_CHECKS = asyncio.Semaphore(2)
