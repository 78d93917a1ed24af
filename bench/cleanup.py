"""Cleanup throughput at production sizes: chip components per second of the cleanup agent,
against plain ``rm`` of the same files plus ``gzip -1`` of the same logs, in the same run.

Each component is a GPC1 chip as production makes it: the image and variance are 4846 x 4868
32-bit pixels (about 94 MB each), the mask 16-bit (47 MB), allocated with ``fallocate`` on a
file system made for the benchmark (bench/volume.py), the log about 500 KB of text in psLib's
layout (seed 000's sample was 517 698 bytes), the trace file empty, and the other products at
the sizes below. Set-up (not timed) writes R runs x C chips twice, once registered in storage
for the agent and once as the anchor's copy; every component has its config dump, so the agent
does the whole work: guards, deletes, log compression, state updates, its own run log.

Both sides start from files on disk, not in the page cache (files waiting for cleanup are
days old): the file system is synced and the page cache dropped before each timed side. The
agent's time is from its agent_started to its agent_stopped event. The anchor removes exactly
what the agent removes: ``rm -f`` of the files the rules delete, then ``gzip -1`` of the logs
(gzip replaces each by ``<log>.gz`` as the agent does); and, when pigz is installed, the same
with ``pigz -1 -p 2``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import Figure, agent_env, bench_database, run_agent_once, working_seconds
from bench.volume import VolumeUnavailable, drop_caches, production_volume
from shared.db.queries import QueryBook, load_queries
from shared.processing.filerules import compressed_rules, deleted_by, rules_for
from shared.storage.store import Storage
from sim.logs import SEED_LOG_BYTES, ipp_log
from sim.sky import OTAS

B = QueryBook(load_queries(Path(__file__).resolve().parent / "sql"))
OTA_PIXELS = 4846 * 4868
_FITS = 2880


def _fits(data_bytes: int) -> int:
    """A FITS file's size: one header block and the data, padded to 2880 bytes."""
    return _FITS + -(-data_bytes // _FITS) * _FITS


#: Bytes of each chip product (per chip unless the rule is run-level). Images at OTA size;
#: the smaller products at plausible production sizes (the catalog: ~4000 PS1_V5 rows of
#: ~230 bytes; b1 binned 16x, b2 256x; the mosaics of 60 chips binned likewise).
SIZES = {
    "PPIMAGE.CHIP": _fits(4 * OTA_PIXELS),
    "PPIMAGE.CHIP.VARIANCE": _fits(4 * OTA_PIXELS),
    "PPIMAGE.CHIP.MASK": _fits(2 * OTA_PIXELS),
    "PPIMAGE.PATTERN": 12_000,
    "TRACE.IMFILE": 0,
    "PSPHOT.OUTPUT": _fits(4000 * 230),
    "PPIMAGE.BIN1": _fits(4 * OTA_PIXELS // 256),
    "PPIMAGE.BIN2": _fits(4 * OTA_PIXELS // 65536),
    "PSPHOT.PSF.SAVE": _fits(30_000),
    "PPIMAGE.STATS": 3_000,
    "PPIMAGE.CONFIG": 120_000,
    "PSPHOT.BACKMDL": _fits(4 * 160 * 160),
    "PPIMAGE.OUTPUT.FPA1": _fits(60 * 4 * OTA_PIXELS // 256),
    "PPIMAGE.OUTPUT.FPA2": _fits(60 * 4 * OTA_PIXELS // 65536),
    "PPIMAGE.JPEG1": 400_000,
    "PPIMAGE.JPEG2": 20_000,
}
#: Distinct log texts, used in turn (making 1 200 of them would take a minute per tree).
LOG_VARIANTS = 16


@dataclass(frozen=True)
class Tree:
    """The files of one set-up: those the agent or the anchor removes, and the logs."""

    doomed: list[Path]
    logs: list[Path]
    bytes_allocated: int


@functools.cache
def _zero_md5(size: int) -> str:
    """The md5 of ``size`` zero bytes (what a fallocated file reads as)."""
    digest, chunk = hashlib.md5(), bytes(1 << 20)
    for _ in range(size // len(chunk)):
        digest.update(chunk)
    digest.update(bytes(size % len(chunk)))
    return digest.hexdigest()


@functools.cache
def _log(variant: int) -> bytes:
    return ipp_log(variant, SEED_LOG_BYTES)


def _allocate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _write_tree(
    root: Path, path_bases: list[str], chips: tuple[str, ...]
) -> tuple[Tree, list[dict[str, object]]]:
    """Write every chip product of every component; returns the tree and storage rows."""
    doomed_rules = {r.name for r in deleted_by("chip", "cleaned", good_smf=False)}
    log_rules = {r.name for r in compressed_rules("chip")}
    doomed, logs, objects, allocated = [], [], [], 0
    for r_index, path_base in enumerate(path_bases):
        for c_index, class_id in enumerate(chips):
            for rule in rules_for("chip"):
                if rule.from_update:  # written by updates; these runs were never updated
                    continue
                rel = rule.filename(path_base, class_id).split("/", 3)[3]
                path = root / rel
                if path.exists():  # a run-level file, written with the first chip
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                if rule.name in log_rules:
                    data = _log((r_index * 61 + c_index) % LOG_VARIANTS)
                    path.write_bytes(data)
                    logs.append(path)
                    size, md5 = len(data), hashlib.md5(data).hexdigest()
                else:
                    size = SIZES[rule.name]
                    _allocate(path, size)
                    md5 = _zero_md5(size)
                allocated += size
                objects.append({"ext_id": rel, "bytes": size, "md5sum": md5})
                if rule.name in doomed_rules:
                    doomed.append(path)
    return Tree(doomed, logs, allocated), objects


async def _register(storage: Storage, runs: int, chips: int) -> list[str]:
    """The runs' rows (goto_cleaned) and their path_bases."""
    db = storage.db
    await db.execute(B.bench_label)
    bases = []
    for r in range(runs):
        workdir = f"neb://any/bench/run{r}"
        chip_id = await db.insert(B.bench_chip_run, exp_id=r + 1, workdir=workdir)
        path_base = f"{workdir}/e{r}.ch.{chip_id}"
        for class_id in OTAS[:chips]:
            await db.execute(
                B.bench_chip_component, chip_id=chip_id, exp_id=r + 1, class_id=class_id, path_base=path_base
            )
        bases.append(path_base)
    return bases


async def _register_files(storage: Storage, root: Path, objects: list[dict[str, object]]) -> None:
    volume = await storage.add_volume("bench0", root)

    async def register(tx):  # type: ignore[no-untyped-def]
        for start in range(0, len(objects), 2000):
            await tx.execute_many(B.bench_object, objects[start : start + 2000])
        await tx.execute(B.bench_instances, vol_id=volume.vol_id, prefix="bench/%")

    await storage.db.transaction(register, name="bench_register")


def _timed(argv: list[str], paths: list[Path]) -> float:
    """Seconds ``xargs -0 ARGV`` takes over exactly these paths."""
    listing = "\0".join(str(p) for p in paths).encode()
    started = time.perf_counter()
    subprocess.run(["xargs", "-0", *argv], input=listing, check=True)
    return time.perf_counter() - started


def _anchor(tree: Tree, compressor: list[str]) -> tuple[float, float]:
    """(rm s, compressor s) over a tree whose files are on disk."""
    drop_caches()
    rm_s = _timed(["rm", "-f"], tree.doomed)
    return rm_s, _timed(compressor, tree.logs)


def _left_and_packed(tree: Tree) -> tuple[int, int]:
    """Files the agent should have removed that are still there; logs it compressed."""
    left = sum(1 for p in tree.doomed + tree.logs if p.exists())
    return left, sum(1 for p in tree.logs if p.with_name(p.name + ".gz").exists())


@dataclass(frozen=True)
class Round:
    agent_s: float
    wall_s: float
    rm_s: float
    gzip_s: float
    pigz_s: float | None
    files: int
    logs: int
    bytes_allocated: int


async def _round(volume: Path, runs: int, chips: int, pigz: bool) -> Round:
    async with bench_database("ipp_bench_cleanup") as (settings, db):
        storage = Storage(db)
        agent_root, anchor_root = volume / "agent", volume / "anchor"
        bases = await _register(storage, runs, chips)
        tree, objects = await asyncio.to_thread(_write_tree, agent_root, bases, OTAS[:chips])
        await _register_files(storage, agent_root, objects)
        copy, _ = await asyncio.to_thread(_write_tree, anchor_root, bases, OTAS[:chips])
        rm_s, gzip_s = await asyncio.to_thread(_anchor, copy, ["gzip", "-1"])
        pigz_s = None
        if pigz:
            await asyncio.to_thread(shutil.rmtree, anchor_root)
            copy, _ = await asyncio.to_thread(_write_tree, anchor_root, bases, OTAS[:chips])
            pigz_rm_s, pigz_s = await asyncio.to_thread(_anchor, copy, ["pigz", "-1", "-p", "2"])
            pigz_s += pigz_rm_s
        await asyncio.to_thread(drop_caches)
        started = time.perf_counter()
        events = await run_agent_once("cleanup", agent_env(settings.effective_dsn()))
        wall_s = time.perf_counter() - started
        states = {r["state"]: int(r["n"]) for r in await db.fetch_all(B.bench_states)}
        left, packed = await asyncio.to_thread(_left_and_packed, tree)
        await asyncio.to_thread(shutil.rmtree, agent_root)
        await asyncio.to_thread(shutil.rmtree, anchor_root)
    if states != {"cleaned": runs} or left or packed != len(tree.logs):
        raise RuntimeError(
            f"cleanup bench: states {states}, {left} files left, {packed}/{len(tree.logs)} logs compressed"
        )
    return Round(
        working_seconds(events),
        wall_s,
        rm_s,
        gzip_s,
        pigz_s,
        len(tree.doomed),
        len(tree.logs),
        tree.bytes_allocated,
    )


async def measure(runs: int = 20, chips: int = 60, rounds: int = 3) -> Figure:
    """The median of ``rounds`` rounds (the disk of a shared machine is noisy)."""
    components = runs * chips
    name = f"cleanup throughput ({runs} x {chips} GPC1-size chips)"
    target = ">= 0.8x rm + gzip -1"
    pigz = shutil.which("pigz") is not None
    try:
        with production_volume("cleanup", 2 * components * 260_000_000) as volume:
            results = [await _round(volume, runs, chips, pigz) for _ in range(rounds)]
    except VolumeUnavailable as exc:
        return Figure(
            name,
            float("nan"),
            float("nan"),
            "components/s",
            "rm + gzip -1",
            target,
            False,
            note=f"not measured: {exc}",
        )
    ours_s = statistics.median(r.agent_s for r in results)
    anchor_s = statistics.median(r.rm_s + r.gzip_s for r in results)
    ours, anchor = components / ours_s, components / anchor_s
    ratios = sorted((r.rm_s + r.gzip_s) / r.agent_s for r in results)
    pigz_note = "pigz not installed"
    if pigz:
        pigz_s = statistics.median(r.pigz_s or 0.0 for r in results)
        pigz_note = (
            f"rm + pigz -1 -p 2 {pigz_s:.2f} s ({components / pigz_s:.0f}/s, ratio {pigz_s / ours_s:.2f})"
        )
    first = results[0]
    return Figure(
        name,
        ours,
        anchor,
        "components/s",
        "rm -f + gzip -1 of the same files",
        target,
        ours >= 0.8 * anchor,
        note=(
            f"{first.files} files deleted ({first.bytes_allocated / 1e9:.0f} GB allocated) "
            f"and {first.logs} logs of {SEED_LOG_BYTES} bytes compressed per round; median "
            f"of {rounds} rounds, files on disk (synced, page cache dropped): agent working "
            f"{ours_s:.2f} s (agent_started to agent_stopped), "
            f"{statistics.median(r.wall_s for r in results):.1f} s with process start-up; "
            f"rm {statistics.median(r.rm_s for r in results):.2f} s + gzip -1 "
            f"{statistics.median(r.gzip_s for r in results):.2f} s; {pigz_note}; ratio per "
            f"round {', '.join(f'{x:.2f}' for x in ratios)}"
        ),
    )
