"""A SIGTERM or SIGINT at any moment of an agent's start-up ends in a logged, clean exit 0.

Agents are signalled at random moments from 0 to 3 s after they were spawned, while CPU
burners load both cores (as in CI, where supervisord's shutdown met agents still importing
numpy and astropy). Each must exit 0, log its stop, leave no claim and no running clients row.

Programs are started as the deployment files start them, through ``env
--block-signal=TERM,INT`` (supervisord.conf, systemd/ipp-agent@.service): a signal during the
interpreter's own start (before the entry point's first line, which no Python code can cover)
then waits, blocked, for the entry point to catch it. Only the first moments of ``env`` itself
(before it blocks them) are left: a moment that falls there is moved to the first moment the
process blocks or catches SIGTERM (``SigBlk``/``SigCgt`` in ``/proc/PID/status``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.core.settings import Settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import drop_database
from sim.workload import W
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port

OWNED = Query("t_owned", "SELECT COUNT(*) AS n FROM sim_work WHERE owner IS NOT NULL", "test")
RUNNING = Query(
    "t_running", "SELECT agent, pid FROM clients WHERE status IN ('running', 'paused', 'stopping')", "test"
)

#: (module, name, arguments) of the programs signalled, a few of each kind of start-up.
PROGRAMS = [
    ("agents", "workload", ()),
    ("agents", "cleanup", ()),
    ("agents", "loader", ("--config", "all")),
    ("agents", "metrics", ("--config", "all")),
    ("agents", "dist_server", ()),
    ("agents", "sweeper", ()),
    ("sim", "psps", ()),
]
SAMPLES = 14
WINDOW_S = 3.0


LAUNCHER = ("env", "--block-signal=TERM,INT")


def holds_sigterm(pid: int) -> bool:
    """True once the process blocks SIGTERM or has a handler for it (bit 14 of SigBlk and
    SigCgt): from then on a SIGTERM can no longer kill it outright."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone: nothing left to wait for
    masks = dict(line.split(":", 1) for line in status.splitlines() if line.startswith("Sig"))
    bit = 1 << (signal.SIGTERM - 1)
    return any(int(masks[k].strip(), 16) & bit for k in ("SigBlk", "SigCgt") if k in masks)


@pytest.fixture
def burners() -> Iterator[None]:
    """Two busy loops: both cores loaded for as long as the test runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
async def psps_db(settings: Settings) -> AsyncIterator[str]:
    name = f"{parse_dsn(settings.db_dsn).database}_sig{secrets.token_hex(2)}"
    yield name
    await drop_database(settings, parse_dsn(settings.db_dsn).with_database(name))


async def _signal_at(agent: AgentProcess, at_s: float, sig: signal.Signals, spawned: float) -> bool:
    """Send ``sig`` ``at_s`` after the spawn (later if ``env`` has not blocked it yet); True
    if the moment had to be moved."""
    await asyncio.sleep(max(0.0, spawned + at_s - time.monotonic()))  # the moment under test
    moved = not holds_sigterm(agent.pid)
    if moved:
        await eventually(lambda: holds_sigterm(agent.pid), timeout_s=60, what="env to block SIGTERM")
    agent.send(sig)
    return moved


def _stop_event(agent: AgentProcess, module: str) -> bool:
    return bool(agent.events("psps_sim_stopped" if module == "sim" else "agent_stopped"))


@pytest.mark.timeout(600)
async def test_a_stop_signal_at_any_moment_of_start_up_ends_in_a_clean_exit_0(
    db: Database, test_dsn: str, tmp_path: Path, agents: list[AgentProcess], burners: None, psps_db: str
) -> None:
    for _ in range(6):  # work to be claimed, slow enough to be caught in the middle
        await db.insert(W.work_add, duration_ms=800)
    rng = random.Random(20261202)
    planned = []
    for i in range(SAMPLES):
        module, name, args = PROGRAMS[i % len(PROGRAMS)]
        at_s = rng.uniform(WINDOW_S * i / SAMPLES, WINDOW_S * (i + 1) / SAMPLES)
        sig = rng.choice((signal.SIGTERM, signal.SIGTERM, signal.SIGINT))
        ports = {"metrics_port": free_port(), "ds_port": free_port(), "odm_port": free_port()}
        agent = AgentProcess(
            name, test_dsn, tmp_path, *args, module=module, launcher=LAUNCHER, psps_db_name=psps_db, **ports
        )
        agents.append(agent)
        planned.append((module, name, at_s, sig, agent, time.monotonic()))
    moved = await asyncio.gather(
        *(_signal_at(agent, at_s, sig, spawned) for _, _, at_s, sig, agent, spawned in planned)
    )
    for module, name, at_s, sig, agent, _ in planned:
        code = await agent.wait(timeout_s=120)
        what = f"{name} signalled {sig.name} {at_s:.2f} s after spawn"
        assert code == 0, f"{what}: exit {code}\n{agent.output()[-3000:]}"
        assert _stop_event(agent, module), f"{what}: no stop logged\n{agent.output()[-3000:]}"
        assert "Traceback" not in agent.output(), f"{what}:\n{agent.output()[-3000:]}"
    assert await db.fetch_val(OWNED) == 0
    assert await db.fetch_all(RUNNING) == []
    print(f"{sum(moved)} of {SAMPLES} moments fell before env blocked the signals")
