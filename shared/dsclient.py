"""Reading a DataStore over HTTP: listings as text and files downloaded with their size and
md5 checked, resuming a partial download with Range. Used by every program that polls a
DataStore (the mirror's dist_client, the PSPS stand-in's DXLayer)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiofiles
import aiohttp

from shared.bundles import file_digest
from shared.datastore import DataStoreError, RemoteFile

_CHUNK = 1 << 20


class FetchFailed(DataStoreError):
    """A request that failed; ``status`` is the HTTP status when the server answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def get_text(session: aiohttp.ClientSession, url: str) -> str:
    """The body of a 200 answer as text; FetchFailed naming the URL otherwise."""
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                body = (await resp.text(errors="replace"))[:200].strip()
                raise FetchFailed(f"GET {url}: HTTP {resp.status}" + (f": {body}" if body else ""),
                                  resp.status)
            return await resp.text(errors="strict")
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
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


async def download(session: aiohttp.ClientSession, url: str, f: RemoteFile, target: Path) -> None:
    """``target`` holding exactly ``f`` (size and md5 checked); resumes a ``.part`` file."""
    part = target.with_name(target.name + ".part")
    done, have = await asyncio.to_thread(_resume_point, target, part, f)
    if done:
        return
    if have < f.bytes or f.bytes == 0:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status not in (200, 206):
                    raise FetchFailed(f"GET {url}: HTTP {resp.status}", resp.status)
                mode = "ab" if resp.status == 206 else "wb"
                async with aiofiles.open(part, mode) as out:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        await out.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchFailed(f"GET {url}: {type(exc).__name__}: {exc} (partial file kept "
                              "for resuming)") from None
    size, md5 = await asyncio.to_thread(file_digest, part)
    if (size, md5) != (f.bytes, f.md5sum):
        await asyncio.to_thread(part.unlink)
        raise FetchFailed(f"{f.name}: downloaded {size} bytes with md5 {md5}, the listing says "
                          f"{f.bytes} bytes with md5 {f.md5sum}")
    await asyncio.to_thread(part.rename, target)
