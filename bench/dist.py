"""Distribution figures, each against its anchor on the same files in the same run.

- Bundle building: the dist_server's bundle step (``shared.distribution.bundles.build`` per component,
  ``dist_parallel`` at once, ISA-L gzip) against ``tar czf`` of the same component files,
  one component after another, as throughput of input bytes; and against ISA-L alone,
  its ``igzip`` compressing the same files on the machine's cores (at most 2).
- Import: ``ipp-agent dist_client --once`` importing the fileset from a running dist_server
  (download, verify, unpack, store, import rows) against ``curl`` + ``md5sum`` + ``tar xzf``
  of the same fileset from the same server, as seconds for the whole fileset.

The survey is one exposure of 8 chips at 1024x1024 (about 20 MB of files per chip).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from isal import isal_zlib

from bench.common import Figure, agent_env, bench_database, run_agent_once, working_seconds
from shared.core.settings import Settings
from shared.db.database import Database
from shared.db.queries import Q
from shared.distribution import bundles, datastore
from shared.processing import runs
from shared.storage.keys import parse_key
from shared.storage.store import Storage
from sim.survey import Survey, SurveyOptions, ensure_volumes


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _components(db: Database, chip_id: int) -> dict[str, list[Path]]:
    files = [f for f in await runs.run_files(db, "chip", chip_id) if f.exists]
    paths = await Storage(db).paths_many([f.key for f in files])
    grouped: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        grouped[f.component or "run"].append(paths[parse_key(f.key).path])
    return grouped


def _tar_czf(groups: dict[str, list[Path]], out: Path) -> float:
    started = time.perf_counter()
    for name, paths in groups.items():  # files may sit on different volumes: -C per file
        args = [a for p in paths for a in ("-C", str(p.parent), f"./{p.name}")]
        subprocess.run(["tar", "czf", str(out / f"{name}.tgz"), *args], check=True)
    return time.perf_counter() - started


async def _ours(groups: dict[str, list[Path]], out: Path, parallel: int, level: int) -> float:
    limit = asyncio.Semaphore(parallel)

    async def one(name: str, paths: list[Path]) -> None:
        async with limit:
            await asyncio.to_thread(
                bundles.build, out / f"{name}.tgz", [bundles.Member(p, p.name) for p in paths], level=level
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(n, p) for n, p in groups.items()))
    return time.perf_counter() - started


def _igzip(groups: dict[str, list[Path]], cores: int, level: int) -> float:
    """Seconds for ISA-L's own igzip to compress each component's files to /dev/null,
    ``cores`` components at once (one igzip each): ISA-L alone on the same bytes and cores."""

    def one(paths: list[Path]) -> None:
        with open(os.devnull, "wb") as sink:
            subprocess.run(["igzip", f"-{level}", "-c", *map(str, paths)], check=True, stdout=sink)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=cores) as pool:
        list(pool.map(one, groups.values()))
    return time.perf_counter() - started


def _isal_in_memory(groups: dict[str, list[Path]], parallel: int, level: int) -> float:
    """Seconds for python-isal to gzip each component's bytes, ``parallel`` components at
    once, the bytes already in memory and nothing written: what building a bundle would cost
    if tar framing, reading, hashing and writing were free (a note beside the anchor)."""
    data = {name: b"".join(p.read_bytes() for p in paths) for name, paths in groups.items()}

    def one(blob: bytes) -> int:
        return len(isal_zlib.compress(blob, level, wbits=31))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, data.values()))
    return time.perf_counter() - started


async def bundle_figure(
    settings: Settings, db: Database, chip_id: int, tmp: Path, rounds: int = 3
) -> list[Figure]:
    groups = await _components(db, chip_id)
    total = sum(p.stat().st_size for paths in groups.values() for p in paths)
    ours, anchor, alone, in_memory = [], [], [], []
    cores = min(2, os.cpu_count() or 1)
    igzip = shutil.which("igzip") is not None
    for n in range(rounds):
        a, b = tmp / f"tar{n}", tmp / f"ours{n}"
        a.mkdir()
        b.mkdir()
        anchor.append(await asyncio.to_thread(_tar_czf, groups, a))
        ours.append(await _ours(groups, b, settings.dist_parallel, settings.dist_gzip_level))
        if igzip:
            alone.append(await asyncio.to_thread(_igzip, groups, cores, settings.dist_gzip_level))
        in_memory.append(await asyncio.to_thread(_isal_in_memory, groups, cores, settings.dist_gzip_level))
    ours_rate, anchor_rate = total / statistics.median(ours) / 1e6, total / statistics.median(anchor) / 1e6
    alone_rate = total / statistics.median(alone) / 1e6 if igzip else float("nan")
    memory_rate = total / statistics.median(in_memory) / 1e6
    sizes = (
        sum(p.stat().st_size for p in (tmp / "ours0").iterdir()),
        sum(p.stat().st_size for p in (tmp / "tar0").iterdir()),
    )
    against_isal = Figure(
        "bundle building against ISA-L alone",
        ours_rate,
        alone_rate,
        "MB/s",
        f"igzip -{settings.dist_gzip_level}, {cores} at once, same files",
        ">= 0.8x",
        igzip and ours_rate >= 0.8 * alone_rate,
        note=(
            f"the same {total / 1e6:.0f} MB, a component per igzip, to /dev/null; python-isal "
            f"on the bytes already in memory, {cores} at once: {memory_rate:.0f} MB/s; medians of {rounds}"
            if igzip
            else "not measured: igzip is not installed (make tools, or apt-get install isal)"
        ),
    )
    return [
        Figure(
            "bundle building (chip components)",
            ours_rate,
            anchor_rate,
            "MB/s",
            "tar czf of the same files",
            ">= 10x",
            ours_rate >= 10 * anchor_rate,
            note=(
                f"{len(groups)} bundles from {total / 1e6:.0f} MB; ISA-L level "
                f"{settings.dist_gzip_level}, {settings.dist_parallel} at once; "
                f"bundles {sizes[0] / 1e6:.0f} MB vs tar czf {sizes[1] / 1e6:.0f} MB; "
                f"medians of {rounds}"
            ),
        ),
        against_isal,
    ]


def _anchor_import(base: str, names: list[str], out: Path) -> float:
    started = time.perf_counter()
    for name in names:
        subprocess.run(["curl", "-sf", "-o", str(out / name), f"{base}/{name}"], check=True)
    subprocess.run(["md5sum", *names], cwd=out, check=True, stdout=subprocess.DEVNULL)
    for name in names:
        if name.endswith(".tgz"):
            target = out / "x" / name
            target.mkdir(parents=True)
            subprocess.run(["tar", "xzf", str(out / name), "-C", str(target)], check=True)
    return time.perf_counter() - started


async def import_figure(settings: Settings, db: Database, chip_id: int, tmp: Path, rounds: int = 3) -> Figure:
    await datastore.add_product(db, "bench-dist", "ipp-dist", None, ["stage", "stage_id"])
    await db.execute(
        Q.dist_queue,
        target_id=None,
        stage="chip",
        stage_id=chip_id,
        label=None,
        clean=0,
        product="bench-dist",
        no_magic=1,  # whatever the survey's destreak, the bench measures the transfer
    )
    port = _port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents",
        "dist_server",
        env=agent_env(settings.effective_dsn(), tmp / "server", ds_port=port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        fileset = None
        for _ in range(600):
            row = await db.fetch_one(
                Q.dist_run_get, product="bench-dist", stage="chip", stage_id=chip_id, clean=0
            )
            if row and row["state"] == "full":
                fileset = row["fileset_name"]
                break
            await asyncio.sleep(0.1)
        if fileset is None:
            raise RuntimeError("dist bench: the fileset was not built")
        files = [f["file_name"] for f in await datastore.fileset_files(db, "bench-dist", fileset)]
        total = sum(int(f["bytes"]) for f in await datastore.fileset_files(db, "bench-dist", fileset))
        base = f"http://127.0.0.1:{port}/ds"
        ours, anchor = [], []
        for n in range(rounds):
            out = tmp / f"curl{n}"
            out.mkdir()
            anchor.append(await asyncio.to_thread(_anchor_import, f"{base}/bench-dist/{fileset}", files, out))
            async with bench_database(f"ipp_bench_mirror{n}") as (msettings, mdb):
                mvar = tmp / f"mirror{n}"
                await ensure_volumes(Storage(mdb), mvar, "mirror")
                await mdb.execute(Q.rc_source_add, name="src", uri=base, product="bench-dist", token=None)
                started = time.perf_counter()
                events = await run_agent_once("dist_client", agent_env(msettings.effective_dsn(), mvar))
                wall = time.perf_counter() - started
                done = [e for e in events if e.get("event") == "dist_imported"]
                if not done:
                    raise RuntimeError(f"dist bench: nothing imported: {events[-3:]}")
                ours.append(working_seconds(events) if events else wall)
    finally:
        server.terminate()
        await server.wait()
    ours_s, anchor_s = statistics.median(ours), statistics.median(anchor)
    return Figure(
        "import of a fileset (mirror client)",
        total / ours_s / 1e6,
        total / anchor_s / 1e6,
        "MB/s",
        "curl + md5sum + tar xzf, same server",
        ">= 2x",
        2 * ours_s <= anchor_s,
        note=(
            f"{len(files)} files, {total / 1e6:.0f} MB; agent {ours_s:.2f} s "
            f"(agent_started to agent_stopped: download, verify, unpack, store, "
            f"import) vs {anchor_s:.2f} s; medians of {rounds}"
        ),
    )


async def measure(chips: int = 8, size: int = 1024, rounds: int = 3) -> list[Figure]:
    async with bench_database("ipp_bench_dist") as (settings, db):
        with tempfile.TemporaryDirectory(prefix="ipp-bench-dist-") as tmp_name:
            tmp = Path(tmp_name)
            await ensure_volumes(Storage(db), tmp / "server", "bench")
            options = SurveyOptions(
                exposures=1,
                chips=chips,
                seed=4,
                site="bench",
                size=size,
                stars_per_chip=4400 if size >= 1024 else 400,
                dvo_dir=tmp / "dvo",
                progress=False,
            )
            summary = await Survey(db, Storage(db), options).run()
            chip_id = summary.chip_runs[0]
            first = await bundle_figure(settings, db, chip_id, tmp, rounds)
            second = await import_figure(settings, db, chip_id, tmp, rounds)
    return [*first, second]
