"""Distribution bundles (REFERENCE 7): one gzipped tar per component, built and unpacked
safely.

Building streams: each member is read in chunks into a tar stream, compressed with ISA-L's
gzip (isal) and hashed on its way to disk, so a bundle is never held in memory and its md5
and size are known when it is closed. Members are ``./<basename>``; the result is a plain
gzip'd ustar that GNU tar reads.

Unpacking refuses anything but plain files named ``./<basename>`` (no absolute paths, no
``..``, no directories inside but the root entry ``./`` the IPP's own bundles begin with, no
symlinks, hard links, devices or sparse files), more members or unpacked bytes than the
limits allow, and a truncated or corrupt archive, before anything is written outside the
staging directory it is given.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from isal import igzip

from shared.core.errors import IppError
from shared.formats import mdc

_CHUNK = 1 << 20
#: Stages whose bundles are named with the class_id (REFERENCE 7).
CLASS_NAMED = ("raw", "chip", "camera", "fake")
#: Stages whose fileset names carry no exp_name tag (dist_make_fileset.pl get_fileset_tag).
UNTAGGED = ("stack", "diff")
#: The component of a run's own files (a camera run's products, a chip run's mosaics): the
#: name the IPP gives a run-level component (disttool_pending_camera.sql, receive_file.pl),
#: listed in the dirinfo so that the IPP's receiver can place them.
RUN_COMPONENT = "exposure"
MEMBER = re.compile(r"^\./[A-Za-z0-9_+][A-Za-z0-9_.+-]*\Z")


class BundleError(IppError):
    """A bundle that cannot be built or is not safe or complete to unpack."""


def fileset_name(stage_name: str, stage_id: int, exp_name: str | None, dist_id: int, prod_id: int) -> str:
    """``$exp_name.$stage.$stage_id.$dist_id.$prod_id``; stacks and diffs have no exp_name
    tag (``stack.$stack_id.$dist_id.$prod_id``, as ``ippScripts/scripts/dist_make_fileset.pl``
    names them; REFERENCE 7)."""
    if stage_name in UNTAGGED:
        return f"{stage_name}.{stage_id}.{dist_id}.{prod_id}"
    return f"{exp_name or stage_name}.{stage_name}.{stage_id}.{dist_id}.{prod_id}"


def bundle_name(stage_name: str, path_base: str, component: str | None) -> str:
    """``basename(path_base).$class_id.tgz`` for raw/chip/camera/fake components (seed 002),
    ``basename(path_base).tgz`` otherwise (and for a chip run's run-level files)."""
    base = path_base.rstrip("/").rsplit("/", 1)[-1]
    if stage_name in CLASS_NAMED and component:
        return f"{base}.{component}.tgz"
    return f"{base}.tgz"


def dirinfo(stage_name: str, workdir: str | None, components: Iterable[tuple[str | None, str]]) -> str:
    """The ``dirinfo.$stage.$stage_id.mdc`` shipped beside the dbinfo, as the IPP's
    ``ippScripts/scripts/dist_advancerun.pl`` writes it: a ``destdir`` block holding the
    run's workdir without its scheme and volume (``none`` for raw), and a ``components``
    block giving, per component (``exposure`` for a run without any), the directory of its
    products relative to destdir. ``components`` holds (component, path_base; uri for raw)."""
    destdir = "none" if stage_name == "raw" or not workdir else _without_volume(workdir)
    head = mdc.Block()
    head.add("destdir", mdc.Scalar("STR", destdir))
    listed = mdc.Block()
    for component, path in components:
        listed.add(component or RUN_COMPONENT, mdc.Scalar("STR", _component_dir(destdir, path)))
    doc = mdc.Block()
    doc.add("destdir", head)
    doc.add("components", listed)
    return mdc.dumps(doc)


def _without_volume(path: str) -> str:
    """``neb://vol/a/b`` -> ``a/b``; ``/data/ippNN/a/b`` -> ``a/b`` (the IPP's layout)."""
    if "://" in path:
        return "/".join(path.split("://", 1)[1].lstrip("/").split("/")[1:])
    return "/".join(path.lstrip("/").split("/")[2:])


def _component_dir(destdir: str, path: str) -> str:
    at = path.find(destdir) if destdir != "none" else -1
    relative = path[at + len(destdir) + 1 :].lstrip("/") if at >= 0 else _without_volume(path)
    return posixpath.dirname(relative) or "."


class HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.md5, self.size = fh, hashlib.md5(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.md5.update(view)
        self.size += len(view)
        return self.fh.write(view)

    def flush(self) -> None:
        self.fh.flush()


@dataclass(frozen=True)
class Member:
    """A file to put in a bundle: its path on disk and its name (a basename) in the tar."""

    path: Path
    name: str


@dataclass(frozen=True)
class Built:
    path: Path
    bytes: int
    md5sum: str
    members: int


def build(target: Path, members: Iterable[Member], *, level: int = 1) -> Built:
    """Write ``target`` (a .tgz) from ``members``; fsynced; returns its size and md5."""
    count = 0
    with open(target, "wb") as raw:
        hashing = HashingWriter(raw)
        with (
            igzip.IGzipFile(
                fileobj=hashing,
                mode="wb",  # type: ignore[no-untyped-call]
                compresslevel=level,
                mtime=0,
            ) as gz,
            # in 1 MiB writes: tarfile's own 10-16 KiB ones cost more than compressing them
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.USTAR_FORMAT, bufsize=_CHUNK) as tar,
        ):
            tar.copybufsize = _CHUNK  # type: ignore[attr-defined]  # TarFile(copybufsize=) is untyped
            for m in members:
                info = tarfile.TarInfo(f"./{m.name}")
                if not MEMBER.match(info.name):
                    raise BundleError(f"{target.name}: member name {m.name!r} is not allowed")
                with open(m.path, "rb") as src:
                    st = os.fstat(src.fileno())
                    info.size, info.mtime = st.st_size, int(st.st_mtime)
                    info.mode = 0o644
                    tar.addfile(info, src)
                count += 1
        raw.flush()
        os.fsync(raw.fileno())
    return Built(target, hashing.size, hashing.md5.hexdigest(), count)


def running_md5(path: Path) -> tuple[int, Any]:
    """(bytes, md5 object) of a file, read in chunks: to go on hashing what is appended."""
    md5, size = hashlib.md5(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            size += len(chunk)
    return size, md5


def file_digest(path: Path) -> tuple[int, str]:
    """(bytes, md5) of a file, read in chunks."""
    size, md5 = running_md5(path)
    return size, md5.hexdigest()


@dataclass(frozen=True)
class UnpackLimits:
    """What one bundle may unpack to: members, bytes in all, and the free space that must
    stay on the staging file system after each member."""

    max_members: int = 1000
    max_bytes: int = 1 << 30
    reserve_bytes: int = 0

    @classmethod
    def for_bundle(
        cls, listed_bytes: int, *, ratio: float, floor_bytes: int, max_members: int, reserve_bytes: int
    ) -> UnpackLimits:
        """Limits for a bundle listed at ``listed_bytes``: at most ``ratio`` times that
        unpacked (never less than ``floor_bytes``)."""
        return cls(max_members, max(int(listed_bytes * ratio), floor_bytes), reserve_bytes)


def extract(bundle: Path, into: Path, limits: UnpackLimits | None = None) -> dict[Path, tuple[int, str]]:
    """Unpack ``bundle`` into the (empty) directory ``into``; returns each file written with
    its (bytes, md5), computed on the way.

    Every member is checked before its bytes are written, against the rules and ``limits``
    (sparse members are refused: their holes would be written out in full); a bad member, a
    bundle over its limits or a truncated archive raises BundleError, and whatever was
    written is removed again."""
    lim = limits or UnpackLimits()
    into.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    digests: dict[Path, tuple[int, str]] = {}
    total = 0
    try:
        gz_in = igzip.open(bundle, "rb")  # type: ignore[no-untyped-call]
        with gz_in as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
            for info in tar:
                if info.isdir() and info.name in (".", "./"):
                    continue  # the root entry `tar -C DIR -czf X.tgz .` writes first (IPP)
                target = _check(bundle, info, into)
                if len(written) >= lim.max_members:
                    raise BundleError(f"{bundle.name}: more than {lim.max_members} members")
                total += info.size
                if total > lim.max_bytes:
                    raise BundleError(
                        f"{bundle.name}: unpacks to more than {lim.max_bytes} "
                        "bytes (dist_unpack_ratio_max of its listed size)"
                    )
                free = shutil.disk_usage(into).free
                if free - info.size < lim.reserve_bytes:
                    raise BundleError(
                        f"{bundle.name}: member {info.name!r} ({info.size} "
                        f"bytes) would leave less than {lim.reserve_bytes} bytes "
                        f"free in staging ({free} free)"
                    )
                if target.exists():
                    raise BundleError(f"{bundle.name}: member {info.name!r} appears twice")
                source = tar.extractfile(info)
                assert source is not None  # a regular file (checked)
                md5 = hashlib.md5()
                with open(target, "wb") as out:
                    written.append(target)
                    copied = 0
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
                        md5.update(chunk)
                        copied += len(chunk)
                if copied != info.size:
                    raise BundleError(f"{bundle.name}: member {info.name!r} is truncated")
                digests[target] = (copied, md5.hexdigest())
    except (tarfile.TarError, EOFError, OSError, zlib.error, igzip.BadGzipFile) as exc:
        _remove(written)
        raise BundleError(f"{bundle.name}: not a complete gzip'd tar ({exc})") from None
    except BundleError:
        _remove(written)
        raise
    if not written:
        raise BundleError(f"{bundle.name}: the bundle is empty")
    return digests


def _check(bundle: Path, info: tarfile.TarInfo, into: Path) -> Path:
    name = info.name
    if info.issparse() or info.type == tarfile.GNUTYPE_SPARSE:
        raise BundleError(f"{bundle.name}: member {name!r} is a sparse file; refused")
    if info.issym() or info.islnk():
        raise BundleError(f"{bundle.name}: member {name!r} is a link; links are refused")
    if info.isdev() or info.isfifo() or info.ischr() or info.isblk():
        raise BundleError(f"{bundle.name}: member {name!r} is a device or fifo; refused")
    if not info.isfile():
        raise BundleError(f"{bundle.name}: member {name!r} is not a plain file; refused")
    if name.startswith("/") or ".." in name.split("/"):
        raise BundleError(f"{bundle.name}: member {name!r} has an absolute path or '..'")
    if not MEMBER.match(name):
        raise BundleError(f"{bundle.name}: member {name!r} is not './<file name>'")
    target = into / name[2:]
    if target.resolve().parent != into.resolve():
        raise BundleError(f"{bundle.name}: member {name!r} would land outside the staging area")
    return target


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
