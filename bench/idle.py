"""An idle agent's cost: CPU share of one core and resident memory, read from /proc.

The agent runs with the default settings (heartbeat every 5 s, poll every 5 s, sweep every
30 s) and nothing to do. The anchor is a bare Python interpreter sleeping for the same window
(the floor any Python process pays), measured the same way in the same run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from bench.common import Figure, bench_database
from shared.core.settings import PROJECT_ROOT

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def observe(proc: asyncio.subprocess.Process, warmup_s: float, window_s: float) -> tuple[float, float]:
    """(CPU share of one core over the window, peak RSS in MB) after a warm-up."""
    await asyncio.sleep(warmup_s)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - t0 < window_s:
        peak = max(peak, rss_mb(proc.pid))
        await asyncio.sleep(1.0)
    share = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    return share, peak


async def measure(window_s: float = 60.0, warmup_s: float = 5.0) -> list[Figure]:
    async with bench_database("ipp_bench_idle") as (settings, _db):
        env = {
            **os.environ,
            "IPP_DB_DSN": settings.effective_dsn(),
            "IPP_LOG_FORMAT": "json",
            "IPP_EXTRA_AGENTS": "workload=sim.workload",
            "PYTHONPATH": str(PROJECT_ROOT),
        }
        quiet = asyncio.subprocess.DEVNULL
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agents", "workload", env=env, stdout=quiet, stderr=quiet
        )
        bare = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(3600)", stdout=quiet
        )
        try:
            (agent_cpu, agent_rss), (bare_cpu, bare_rss) = await asyncio.gather(
                observe(agent, warmup_s, window_s), observe(bare, warmup_s, window_s)
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            bare.kill()
            await asyncio.wait_for(agent.wait(), 60)
            await bare.wait()
    note = f"window {window_s:.0f} s after {warmup_s:.0f} s warm-up, default settings"
    return [
        Figure(
            "idle agent CPU",
            agent_cpu * 100,
            bare_cpu * 100,
            "% of a core",
            "sleeping bare python",
            "< 1 % of a core",
            agent_cpu < 0.01,
            note + f"; anchor {bare_cpu * 100:.3f} %",
        ),
        Figure(
            "idle agent resident memory",
            agent_rss,
            bare_rss,
            "MB",
            "sleeping bare python",
            "< 80 MB",
            agent_rss < 80,
            note,
        ),
    ]


if __name__ == "__main__":
    print(asyncio.run(measure()))
