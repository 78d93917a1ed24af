"""A file system big enough for production-sized products, on a machine that has no such disk.

Production chip products are tens of MB each (a GPC1 OTA is 4846 x 4868 pixels): 20 runs of
60 chips are about 280 GB of images, masks and variances, more than a benchmark machine has
free. The benchmarks allocate those files with ``fallocate`` (their blocks are reserved and on
disk as unwritten extents, so unlinking them frees real extents, but no bytes are written) on
an ext4 file system made for the purpose: a sparse image file loop-mounted with direct I/O, so
what the file system writes (its metadata, its journal, the text files) really goes to the
disk below and the sparse image grows only by that. Where a directory with enough room is
given (``IPP_BENCH_VOLUME_DIR``) it is used as it is instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from shared.core.settings import PROJECT_ROOT

#: Apparent size of the sparse image: room for two trees of 20 x 60 production components.
IMAGE_BYTES = 1 << 40


class VolumeUnavailable(RuntimeError):
    """No production-sized file system can be had here; says what to do instead."""


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def production_volume(name: str, need_bytes: int) -> Iterator[Path]:
    """A directory on a file system with ``need_bytes`` free (apparent: fallocated files),
    removed afterwards."""
    given = os.environ.get("IPP_BENCH_VOLUME_DIR")
    if given:
        root = Path(given) / name
        if shutil.disk_usage(given).free < need_bytes:
            raise VolumeUnavailable(
                f"IPP_BENCH_VOLUME_DIR={given} has less than {need_bytes / 1e9:.0f} GB free"
            )
        root.mkdir(parents=True, exist_ok=False)
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    if os.geteuid() != 0 or not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        raise VolumeUnavailable(
            "a production-sized benchmark needs root (to loop-mount a sparse ext4 image) or "
            f"IPP_BENCH_VOLUME_DIR naming a directory with {need_bytes / 1e9:.0f} GB free"
        )
    with _loop_ext4(PROJECT_ROOT / "var" / "bench" / name) as mount:
        yield mount


@contextlib.contextmanager
def _loop_ext4(where: Path) -> Iterator[Path]:
    """A fresh sparse ext4 image under ``where``, mounted at ``where/mnt``; all undone after."""
    where.mkdir(parents=True, exist_ok=True)
    image, mount = where / "volume.img", where / "mnt"
    with contextlib.suppress(subprocess.CalledProcessError):
        _run("umount", str(mount))  # a leftover of an interrupted run
    image.unlink(missing_ok=True)
    with image.open("wb") as fh:
        fh.truncate(IMAGE_BYTES)
    try:
        # few inodes (their tables are written lazily), a journal of ordinary size, no discard
        _run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-N",
            "500000",
            "-J",
            "size=256",
            "-E",
            "lazy_itable_init=1,nodiscard",
            str(image),
        )
        device = _run("losetup", "--direct-io=on", "--show", "-f", str(image))
        try:
            mount.mkdir(exist_ok=True)
            _run("mount", device, str(mount))
            try:
                yield mount
            finally:
                _run("umount", str(mount))
        finally:
            _run("losetup", "-d", device)
    finally:
        image.unlink(missing_ok=True)


def drop_caches() -> bool:
    """Write dirty pages out and drop the page cache (root only), so that what is read next
    comes from the disk, as the days-old files a cleanup meets do; False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
