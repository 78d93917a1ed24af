"""Update overhead: the update agent regenerating a cleaned chip run, against running the
reference processor directly on the same job, in the same run.

Set-up (not timed): a one-exposure survey, its chip run cleaned by the cleanup agent. Each
round asks for the update and runs ``ipp-agent update --once``; the agent's time is the
``duration_s`` of its ``update_done`` event (claim to recorded: planning, the job, the
processor, moving outputs into storage, the state changes). The processor command is a thin
wrapper that keeps a copy of the job, so the anchor then runs ``python -m sim.regen`` on
exactly that job (outputs redirected to a scratch directory), timed as a process the same way
the agent starts it. Rounds alternate; medians are compared.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Figure, agent_env, bench_database, run_agent_once
from shared.core.settings import PROJECT_ROOT, Settings
from shared.db.database import Database
from shared.processing import runs
from shared.storage.store import Storage
from sim.survey import Survey, SurveyOptions, ensure_volumes


async def _direct(job_path: Path, scratch: Path) -> float:
    """Run the reference processor on the saved job, outputs into ``scratch``."""
    job = json.loads(await asyncio.to_thread(job_path.read_text))
    for n, task in enumerate(job["tasks"]):
        for group in ("outputs", "recovery"):
            task[group] = {k: str(scratch / f"{n}.{group}.{k}") for k in task[group]}
    direct_job = scratch / "job.json"
    await asyncio.to_thread(direct_job.write_text, json.dumps(job))
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.regen", str(direct_job), cwd=PROJECT_ROOT
    )
    if await proc.wait() != 0:
        raise RuntimeError("update bench: direct sim.regen failed")
    return time.perf_counter() - started


async def _clean(settings: Settings, db: Database, chip_id: int) -> None:
    await runs.set_state(db, "chip", "goto_cleaned", run_id=chip_id)
    await run_agent_once("cleanup", agent_env(settings.effective_dsn()))


async def measure(chips: int = 8, size: int = 1024, rounds: int = 3) -> Figure:
    async with bench_database("ipp_bench_update") as (settings, db):
        with tempfile.TemporaryDirectory(prefix="ipp-bench-update-") as tmp:
            root = Path(tmp)
            storage = Storage(db)
            await ensure_volumes(storage, root, "bench")
            options = SurveyOptions(
                exposures=1,
                chips=chips,
                seed=3,
                site="bench",
                size=size,
                stars_per_chip=4400 if size >= 1024 else 400,
                dvo_dir=root / "dvo",
                progress=False,
            )
            summary = await Survey(db, storage, options).run()
            chip_id = summary.chip_runs[0]
            saved = root / "job.json"
            wrapper = (
                f'sh -c \'cp "$0" {shlex.quote(str(saved))} && '
                f'exec {shlex.quote(sys.executable)} -m sim.regen "$0"\''
            )
            env = {"update_command_chip": wrapper, "update_scratch_dir": str(root / "scratch")}
            ours, direct, files = [], [], 0
            for n in range(rounds):
                await _clean(settings, db, chip_id)
                await runs.request_update(db, "chip", chip_id)
                events = await run_agent_once("update", agent_env(settings.effective_dsn(), **env))
                done = [e for e in events if e.get("event") == "update_done"]
                if not done:
                    raise RuntimeError(f"update bench: no update_done in round {n}: {events[-3:]}")
                ours.append(float(done[0]["duration_s"]))
                files = int(done[0]["files"])
                out = root / f"direct{n}"
                out.mkdir()
                direct.append(await _direct(saved, out))
    agent_s, direct_s = statistics.median(ours), statistics.median(direct)
    ratio = agent_s / direct_s
    return Figure(
        "update overhead (chip run regenerated)",
        agent_s,
        direct_s,
        "s",
        "python -m sim.regen on the same job",
        "<= 1.1x",
        ratio <= 1.1,
        note=(
            f"{chips} chips of {size}x{size}, {files} files regenerated; medians of "
            f"{rounds} rounds: agent {agent_s:.2f} s (claim to recorded), direct "
            f"{direct_s:.2f} s (process start to exit)"
        ),
    )
