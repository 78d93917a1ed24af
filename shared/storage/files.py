"""The file primitives of storage: hashing, durable writes (fsync, or one syncfs for many
small files), atomic publication by rename, links, and deletes spread over a few lanes."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import shutil
import sys
from pathlib import Path

from shared.core.errors import (
    StorageError,
)

_CHUNK = 1 << 20


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.md5()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def fsync_and_hash(path: Path) -> tuple[int, str]:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    return hash_file(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    fsync_dir(final.parent)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def link_hash(source: Path, tmp: Path, digest: tuple[int, str] | None = None) -> tuple[int, str]:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    link_or_copy(source, tmp)
    if digest is None:
        return fsync_and_hash(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
        if os.fstat(fh.fileno()).st_size != digest[0]:
            raise StorageError(f"{source}: {os.fstat(fh.fileno()).st_size} bytes, expected {digest[0]}")
    return digest


def unlink_all(paths: list[Path]) -> None:
    for path in paths:
        unlink(path)


#: Metadata work on files on disk (unlink, create) is mostly waiting on the file system, and
#: operations in one directory take turns on its lock; lanes of whole directories overlap
#: them (on the project's test machine 4 lanes unlinked at 40 us a file against 85 us).
FS_LANES = 4


def split_in_lanes(paths: list[Path]) -> list[list[Path]]:
    """The paths grouped by directory, the directories spread over up to FS_LANES lanes."""
    by_dir: dict[Path, list[Path]] = {}
    for path in paths:
        by_dir.setdefault(path.parent, []).append(path)
    lanes: list[list[Path]] = [[] for _ in range(min(FS_LANES, len(by_dir)))]
    for group in sorted(by_dir.values(), key=len, reverse=True):
        min(lanes, key=len).extend(group)
    return lanes


async def unlink_many(paths: list[Path]) -> None:
    """Unlink the files (missing ones are fine), in lanes of whole directories."""
    await asyncio.gather(*(asyncio.to_thread(unlink_all, lane) for lane in split_in_lanes(paths)))


def write_all(items: list[tuple[Path, bytes]]) -> list[tuple[int, str]]:
    """Write each temporary file (not yet synced: see :func:`sync_files`); returns
    (bytes, md5) of each."""
    out = []
    for tmp, data in items:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
        out.append((len(data), hashlib.md5(data).hexdigest()))
    return out


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_syncfs = getattr(_libc, "syncfs", None)
#: From this many files on, one syncfs(2) per file system beats one fsync(2) per file: the
#: data of small files goes out in one writeback and one journal commit instead of one each.
SYNCFS_FROM_FILES = 16


def syncfs_dir(directory: Path) -> None:
    assert _syncfs is not None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of the file system holding {directory}: {os.strerror(err)}")
    finally:
        os.close(fd)


def syncfs_each(directories: set[Path]) -> None:
    """One syncfs(2) for each file system holding one of the directories."""
    by_device: dict[int, Path] = {}
    for directory in directories:
        by_device.setdefault(os.stat(directory).st_dev, directory)
    for directory in by_device.values():
        syncfs_dir(directory)


def sync_files(paths: list[Path]) -> None:
    """Make the written files' data durable: one fsync per file for a few files, one
    syncfs(2) per file system for many (Linux)."""
    if _syncfs is not None and len(paths) >= SYNCFS_FROM_FILES:
        syncfs_each({p.parent for p in paths})
        return
    for path in paths:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def publish_all(moves: list[tuple[Path, Path]]) -> None:
    """Rename the temporaries into place and make the new names durable."""
    for tmp, final in moves:
        os.replace(tmp, final)
    directories = {final.parent for _, final in moves}
    if _syncfs is not None and len(directories) >= SYNCFS_FROM_FILES:
        syncfs_each(directories)
        return
    for directory in directories:
        fsync_dir(directory)
