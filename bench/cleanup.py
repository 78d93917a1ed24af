"""Cleanup throughput: components per second of the cleanup agent on chip runs, against
plain ``rm`` of the same files (a copy of the same tree) in the same run.

Set-up (not timed) writes the chip files of R runs x C components straight into a volume and
registers them in bulk; every component has its config dump and log, so the agent does the
full work: guards, deletes, log compression, state updates, its own run log. The agent's
working time is from its agent_started to its agent_stopped event (process start-up is
reported beside it).

"The same files" are the files the agent removes: those the rules delete and the logs it
replaces by compressed copies. Both sides start from files that are on disk, as files
waiting for cleanup are in production (days old): the file system is synced after set-up
and after the anchor's copy. Without that, ``rm`` would delete files that had never left
the page cache (with delayed allocation no blocks to free: about 10 us a file here instead
of about 90 us), which no real cleanup meets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Figure, agent_env, bench_database, run_agent_once, working_seconds
from shared.filerules import deleted_by, rules_for
from shared.queries import QueryBook, load_queries
from shared.storage import Storage
from sim.sky import OTAS

B = QueryBook(load_queries(Path(__file__).resolve().parent / "sql"))
CONTENT = b"x" * 512
LOG = b"ppImage bench component\n" * 40


async def _build(db_storage: Storage, root: Path, runs: int, chips: int) -> list[Path]:
    """Create the runs; returns the paths of the files cleanup should delete."""
    db = db_storage.db
    volume = await db_storage.add_volume("bench0", root)
    await db.execute(B.bench_label)
    doomed_rules = {r.name for r in deleted_by("chip", "cleaned", good_smf=False)}
    doomed: list[Path] = []
    objects = []
    for r in range(runs):
        workdir = f"neb://any/bench/run{r}"
        chip_id = await db.insert(B.bench_chip_run, exp_id=r + 1, workdir=workdir)
        path_base = f"{workdir}/e{r}.ch.{chip_id}"
        for class_id in OTAS[:chips]:
            await db.execute(B.bench_chip_component, chip_id=chip_id, exp_id=r + 1,
                             class_id=class_id, path_base=path_base)
            for rule in rules_for("chip"):
                key = rule.filename(path_base, class_id)
                rel = key.split("/", 3)[3]
                data = LOG if rule.file_class == "log" else CONTENT
                path = root / rel
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    objects.append({"ext_id": rel, "bytes": len(data),
                                    "md5sum": hashlib.md5(data).hexdigest()})
                if rule.name in doomed_rules or rule.file_class == "log":
                    doomed.append(path)

    async def register(tx):  # type: ignore[no-untyped-def]
        for start in range(0, len(objects), 2000):
            await tx.execute_many(B.bench_object, objects[start:start + 2000])
        await tx.execute(B.bench_instances, vol_id=volume.vol_id, prefix="bench/%")

    await db.transaction(register, name="bench_register")
    return sorted(set(doomed))


def _rm(paths: list[Path]) -> float:
    """Time plain rm -f of exactly these files (argument lists via xargs)."""
    listing = "\0".join(str(p) for p in paths).encode()
    started = time.perf_counter()
    subprocess.run(["xargs", "-0", "rm", "-f"], input=listing, check=True)
    return time.perf_counter() - started


async def _round(runs: int, chips: int) -> tuple[float, float, float, int]:
    """One set-up, one rm of the copy, one agent: (agent working s, with start-up s, rm s,
    files deleted)."""
    async with bench_database("ipp_bench_cleanup") as (settings, db):
        with tempfile.TemporaryDirectory(prefix="ipp-bench-clean-") as tmp:
            root = Path(tmp) / "vol"
            doomed = await _build(Storage(db), root, runs, chips)
            anchor_root = Path(tmp) / "copy"
            await asyncio.to_thread(shutil.copytree, root, anchor_root)
            copies = [anchor_root / p.relative_to(root) for p in doomed]
            await asyncio.to_thread(os.sync)  # both trees on disk, as in production
            rm_s = await asyncio.to_thread(_rm, copies)
            started = time.perf_counter()
            events = await run_agent_once("cleanup", agent_env(settings.effective_dsn()))
            wall_s = time.perf_counter() - started
            states = {r["state"]: int(r["n"]) for r in await db.fetch_all(B.bench_states)}
            left = sum(1 for p in doomed if p.exists())
    if states != {"cleaned": runs} or left:
        raise RuntimeError(f"cleanup bench: states {states}, {left} files left")
    return working_seconds(events), wall_s, rm_s, len(doomed)


async def measure(runs: int = 20, chips: int = 60, rounds: int = 3) -> Figure:
    """The median of ``rounds`` rounds (the disk of a shared machine is noisy)."""
    components = runs * chips
    results = [await _round(runs, chips) for _ in range(rounds)]
    ours_s = statistics.median(r[0] for r in results)
    wall_s = statistics.median(r[1] for r in results)
    rm_s = statistics.median(r[2] for r in results)
    ratios = sorted(r[2] / r[0] for r in results)
    ours, anchor = components / ours_s, components / rm_s
    return Figure("cleanup throughput (chip components)", ours, anchor, "components/s",
                  "rm -f of the same files", ">= 0.5x rm and >= 2000/s",
                  ours >= 0.5 * anchor and ours >= 2000,
                  note=(f"{runs} runs x {chips} components, {results[0][3]} files deleted; "
                        f"median of {rounds} rounds: agent working {ours_s:.2f} s "
                        f"(agent_started to agent_stopped), {wall_s:.1f} s with process "
                        f"start-up ({components / wall_s:.0f}/s); rm {rm_s:.2f} s; ratio per "
                        f"round {', '.join(f'{x:.2f}' for x in ratios)}"))
