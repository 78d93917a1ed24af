"""Scratch directories: removed after use, and removable once their owner is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.runtime.scratch import LOCK_NAME, UNLOCKED_GRACE_S, remove_stale, scratch_dir

HOLDER = """
import asyncio, sys
from pathlib import Path
from shared.runtime.scratch import scratch_dir

async def main():
    async with scratch_dir(Path(sys.argv[1]), "held.") as path:
        (path / "partial.fits").write_bytes(b"half an image")
        print(path, flush=True)
        sys.stdin.read()   # hold it until told (or killed)

asyncio.run(main())
"""


def _holder(root: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that holds a scratch directory under ``root``; returns it and the path."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


async def test_a_scratch_directory_is_removed_after_use_even_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        async with scratch_dir(tmp_path, "job.") as path:
            (path / "out").mkdir()
            (path / "out" / "x").write_bytes(b"x")
            assert (path / LOCK_NAME).exists()
            raise RuntimeError("processor failed")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_owners_directory_is_removed_and_a_live_owners_is_kept(tmp_path):
    """The lock dies with its process, SIGKILL included; a live holder keeps its directory."""
    killed, killed_path = _holder(tmp_path)
    alive, alive_path = _holder(tmp_path)
    try:
        assert remove_stale(tmp_path) == []
        killed.kill()
        killed.wait()
        assert remove_stale(tmp_path) == [killed_path]
        assert not killed_path.exists()
        assert (alive_path / "partial.fits").read_bytes() == b"half an image"
    finally:
        alive.communicate("")
    assert alive.returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_a_directory_without_a_lock_is_removed_only_after_the_grace(tmp_path):
    """A process killed between making its directory and locking it leaves one with no lock
    file; it is kept for UNLOCKED_GRACE_S (its maker may be about to lock it), then removed.
    Files that are not directories and links to elsewhere are never touched."""
    young, old = tmp_path / "young", tmp_path / "old"
    young.mkdir()
    old.mkdir()
    (old / "leftover").write_bytes(b"x")
    then = time.time() - UNLOCKED_GRACE_S - 60
    os.utime(old, (then, then))
    (tmp_path / "a-file").write_bytes(b"keep")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere, target_is_directory=True)
    assert remove_stale(tmp_path) == [old]
    assert young.is_dir() and (tmp_path / "a-file").exists() and elsewhere.is_dir()


def test_a_missing_root_has_nothing_stale(tmp_path):
    assert remove_stale(tmp_path / "absent") == []
