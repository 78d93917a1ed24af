"""Reading a DataStore over HTTP: listings as text and files downloaded with their size and
md5 checked, resuming a partial download with Range. Used by every program that polls a
DataStore (the mirror's dist_client, the PSPS stand-in's DXLayer).

Nothing a peer sends is trusted to be small or quick: every request has a total deadline
(a download's grows with its listed size), a listing is read up to a byte limit, a download
stops at the listed size, bodies are never decompressed on the way (the session must be made
with :func:`session`), and redirects are followed only to the same scheme, host and port.

A peer's bearer token is given per request, never to the session: it goes with the request
to that peer's own URL only, and a redirect is followed without it, so no other peer and no
other address ever sees it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiofiles
import aiohttp

from shared.core.settings import Settings
from shared.distribution.bundles import file_digest, running_md5
from shared.distribution.datastore import DataStoreError, RemoteFile

_CHUNK = 1 << 20
MAX_REDIRECTS = 5


class FetchFailed(DataStoreError):
    """A request that failed; ``status`` is the HTTP status when the server answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one peer may cost: seconds per request, bytes per listing, and the slowest
    download rate (a download's deadline is ``timeout_s + bytes / min_rate_bytes_s``)."""

    timeout_s: float = 60.0
    listing_max_bytes: int = 16 * 1024 * 1024
    min_rate_bytes_s: float = 256 * 1024

    def download_deadline_s(self, size: int) -> float:
        return self.timeout_s + size / self.min_rate_bytes_s

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.dist_http_timeout_s, settings.dist_listing_max_bytes, settings.dist_min_rate_bytes_s
        )


def session(limits: Limits) -> aiohttp.ClientSession:
    """A client session for DataStore peers: bodies as sent (no automatic decompression),
    connect and read deadlines from ``limits`` (each request adds its total deadline), no
    credentials of its own (each request carries its peer's)."""
    timeout = aiohttp.ClientTimeout(
        total=None, connect=limits.timeout_s, sock_connect=limits.timeout_s, sock_read=limits.timeout_s
    )
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False)


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


@asynccontextmanager
async def _get(
    http: aiohttp.ClientSession,
    url: str,
    deadline_s: float,
    headers: dict[str, str] | None = None,
    token: str = "",
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET ``url`` following redirects to the same origin only, within ``deadline_s`` in
    all (the response body must be read inside the context). ``token`` goes with the first
    request only: a redirect is followed without it."""
    target = url
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    async with asyncio.timeout(deadline_s):
        for _ in range(MAX_REDIRECTS + 1):
            async with http.get(target, headers=sent, allow_redirects=False) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    location = urljoin(target, resp.headers.get("Location", ""))
                    if not _same_origin(url, location):
                        raise FetchFailed(
                            f"GET {url}: redirect to {location} refused (only "
                            "the same host and port are followed)",
                            resp.status,
                        )
                    target = location
                    sent.pop("Authorization", None)
                    continue
                yield resp
                return
    raise FetchFailed(f"GET {url}: more than {MAX_REDIRECTS} redirects")


async def _read_capped(resp: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchFailed(
            f"GET {url}: {resp.content_length} bytes, more than the {limit} bytes a listing may have"
        )
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise FetchFailed(f"GET {url}: more than the {limit} bytes a listing may have")
    return bytes(body)


async def get_text(
    http: aiohttp.ClientSession, url: str, limits: Limits | None = None, token: str = ""
) -> str:
    """The body of a 200 answer as UTF-8 text; FetchFailed naming the URL otherwise. ``token``:
    the peer's bearer token, for ``url`` only."""
    lim = limits or Limits()
    try:
        async with _get(http, url, lim.timeout_s, token=token) as resp:
            if resp.status != 200:
                body = (await _read_capped(resp, url, 4096))[:200].decode(errors="replace")
                raise FetchFailed(
                    f"GET {url}: HTTP {resp.status}" + (f": {body.strip()}" if body.strip() else ""),
                    resp.status,
                )
            if resp.headers.get("Content-Encoding", "identity") not in ("identity", ""):
                raise FetchFailed(
                    f"GET {url}: Content-Encoding "
                    f"{resp.headers['Content-Encoding']!r} refused (listings are "
                    "plain text)"
                )
            return (await _read_capped(resp, url, lim.listing_max_bytes)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FetchFailed(f"GET {url}: not UTF-8 text (byte {exc.start})") from None
    except TimeoutError:
        raise FetchFailed(f"GET {url}: no complete answer within {lim.timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"GET {url}: {type(exc).__name__}: {exc}") from None


def _resume_point(target: Path, part: Path, f: RemoteFile) -> tuple[bool, int]:
    """(already complete, bytes of a partial download to resume from)."""
    if target.exists() and file_digest(target) == (f.bytes, f.md5sum):
        return True, 0
    have = part.stat().st_size if part.exists() else 0
    if have > f.bytes:
        part.unlink()
        have = 0
    return False, have


async def download(
    http: aiohttp.ClientSession,
    url: str,
    f: RemoteFile,
    target: Path,
    limits: Limits | None = None,
    token: str = "",
) -> None:
    """``target`` holding exactly ``f`` (size and md5 checked); resumes a ``.part`` file.
    Reading stops at the listed size; a server that sends more, or a disk that fills, fails
    the download and removes the partial file."""
    lim = limits or Limits()
    part = target.with_name(target.name + ".part")
    done, have = await asyncio.to_thread(_resume_point, target, part, f)
    if done:
        return
    if have < f.bytes or f.bytes == 0:
        try:
            size, md5 = await _fetch(http, url, f, part, have, lim, token)
        except FetchFailed:
            raise
        except TimeoutError:  # before OSError, of which it is a kind
            raise FetchFailed(
                f"GET {url}: not complete within "
                f"{lim.download_deadline_s(f.bytes - have):.0f} s (partial file "
                "kept for resuming)"
            ) from None
        except OSError as exc:
            await asyncio.to_thread(part.unlink, True)
            why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            raise FetchFailed(f"{f.name}: cannot write {part.name}: {why}") from None
        except aiohttp.ClientError as exc:
            raise FetchFailed(
                f"GET {url}: {type(exc).__name__}: {exc} (partial file kept for resuming)"
            ) from None
    else:
        size, md5 = await asyncio.to_thread(file_digest, part)
    if (size, md5) != (f.bytes, f.md5sum):
        await asyncio.to_thread(part.unlink)
        raise FetchFailed(
            f"{f.name}: downloaded {size} bytes with md5 {md5}, the listing says "
            f"{f.bytes} bytes with md5 {f.md5sum}"
        )
    await asyncio.to_thread(part.rename, target)


async def _fetch(
    http: aiohttp.ClientSession, url: str, f: RemoteFile, part: Path, have: int, lim: Limits, token: str
) -> tuple[int, str]:
    """Append the rest of ``f`` to ``part`` (from ``have``), never past the listed size;
    returns the whole file's (bytes, md5), hashed as the bytes arrive (a resumed download's
    first part is read once for it), so the file is never read back to be verified."""
    headers = {"Range": f"bytes={have}-"} if have else {}
    async with _get(http, url, lim.download_deadline_s(f.bytes - have), headers, token) as resp:
        if resp.status not in (200, 206):
            raise FetchFailed(f"GET {url}: HTTP {resp.status}", resp.status)
        mode, written = ("ab", have) if resp.status == 206 else ("wb", 0)
        md5 = (await asyncio.to_thread(running_md5, part))[1] if mode == "ab" else hashlib.md5()
        async with aiofiles.open(part, mode) as out:
            async for chunk in resp.content.iter_chunked(_CHUNK):
                written += len(chunk)
                if written > f.bytes:
                    await out.close()
                    await asyncio.to_thread(part.unlink, True)
                    raise FetchFailed(
                        f"GET {url}: the server sent more than the {f.bytes} bytes the listing gives; refused"
                    )
                md5.update(chunk)
                await out.write(chunk)
    return written, md5.hexdigest()
