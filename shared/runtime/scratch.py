"""Scratch directories that a killed process cannot strand.

A worker makes its scratch directory with :func:`scratch_dir`, which holds an exclusive
flock(2) on a lock file inside it for as long as the directory is in use. The kernel drops
the lock when the process ends, however it ends (SIGKILL too), so :func:`remove_stale` can
tell a directory nobody uses any more from one in use without clocks or database rows: it
removes the directories whose lock it can take. The lock file is locked under a temporary
name and renamed into place, so a directory that shows the lock file is always locked by its
owner until the owner is gone. Scratch roots are local to a host (flock is not trusted on
network file systems).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

LOCK_NAME = ".in-use"
#: A directory without a lock file (made by a process killed before it locked it) is left
#: alone for this long, then removed.
UNLOCKED_GRACE_S = 3600.0


def _make(root: Path, prefix: str) -> tuple[Path, int]:
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    fd = os.open(path / f"{LOCK_NAME}.new", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the name yet
        os.rename(path / f"{LOCK_NAME}.new", path / LOCK_NAME)
    except BaseException:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path, fd


def _drop(path: Path, fd: int) -> None:
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def scratch_dir(root: Path, prefix: str) -> AsyncIterator[Path]:
    """A new directory under ``root``, locked while the block runs and removed after it."""
    path, fd = await asyncio.to_thread(_make, root, prefix)
    try:
        yield path
    finally:
        await asyncio.to_thread(_drop, path, fd)


def _stale(entry: Path, now: float) -> bool:
    """Whether ``entry`` is a scratch directory nobody holds (its lock is free)."""
    try:
        fd = os.open(entry / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return now - entry.stat().st_mtime > UNLOCKED_GRACE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner is alive
    finally:
        os.close(fd)  # a lock we took goes with the descriptor
    return True


def remove_stale(root: Path) -> list[Path]:
    """Remove the scratch directories under ``root`` whose owner is gone; returns them."""
    if not root.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in sorted(root.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        with contextlib.suppress(FileNotFoundError):  # another janitor was quicker
            if _stale(entry, now):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed
