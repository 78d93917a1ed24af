"""Test helpers: agent subprocesses, their JSON logs, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Runtime settings that make the tests quick (seconds).
FAST: dict[str, Any] = {
    "heartbeat_interval_s": 0.3,
    "heartbeat_grace_s": 1.5,
    "client_stale_s": 2.0,
    "sweep_interval_s": 0.5,
    "poll_interval_s": 0.2,
    "drain_timeout_s": 5.0,
    "db_reconnect_max_s": 30.0,
    "log_format": "json",
    "log_dir": "",  # no log files in the project's logs/: a test that wants one says where
}


def agent_env(dsn: str, **settings: Any) -> dict[str, str]:
    """Environment for an agent process: the test database, fast settings, the workload."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPP_")}
    merged = {**FAST, **settings}
    env.update({f"IPP_{k.upper()}": str(v) for k, v in merged.items()})
    env["IPP_DB_DSN"] = dsn
    env["IPP_EXTRA_AGENTS"] = "workload=sim.workload"
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_ippctl(
    dsn: str, *args: str, stdin: str | None = None, **settings: Any
) -> subprocess.CompletedProcess[str]:
    """``ippctl ARGS`` against the database ``dsn``, as an operator runs it (stdin if given,
    and ``settings`` as IPP_* variables)."""
    return subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", *args],
        cwd=ROOT,
        env=agent_env(dsn, **settings),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout_s: float = 20.0, what: str = ""
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}: last={last!r}")


class AgentProcess:
    """One ``python -m agents NAME`` process whose stdout (JSON lines) goes to a file
    (``module="sim"`` runs a stand-in, ``python -m sim NAME``, the same way)."""

    def __init__(
        self,
        name: str,
        dsn: str,
        out_dir: Path,
        *args: str,
        module: str = "agents",
        launcher: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        self.log_path = out_dir / f"{name}-{time.monotonic_ns()}.log"
        # what an agent writes under var_dir (plots, batches, staging) stays in the test's own
        # directory unless the test names one: never the project's var/ (issue 31)
        settings.setdefault("var_dir", str(out_dir / "var"))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [*launcher, sys.executable, "-m", module, name, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=agent_env(dsn, **settings),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Parsed log lines (optionally only those with event == name)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and (name is None or record.get("event") == name):
                    found.append(record)
        return found

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client_id(self) -> str | None:
        started = self.events("agent_started")
        return started[0]["client_id"] if started else None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit; returns its exit code."""
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"agent did not exit within {timeout_s}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()
