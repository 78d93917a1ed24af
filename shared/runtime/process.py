"""Running an outside program for an agent: a deadline, and nothing left behind.

The program runs in its own session (process group) so that a timeout, or the agent being
cancelled while it waits, kills the program and everything it started. Its stderr goes to a
file beside the job, and the last lines of it come back in the error, so the reason for a
failure reaches the run's note and the agent's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from shared.core.errors import IppError


class CommandFailed(IppError):
    """The program exited non-zero, could not start, or ran past its deadline."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    duration_s: float


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_command(
    argv: list[str], *, timeout_s: float, log_path: Path, cwd: Path | None = None
) -> CommandResult:
    """Run ``argv`` to completion within ``timeout_s``; CommandFailed otherwise."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    name = Path(argv[0]).name
    with log_path.open("wb") as log:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandFailed(f"{name}: cannot start ({exc.strerror or exc})") from None
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            raise CommandFailed(f"{name}: killed after the {timeout_s:g} s timeout") from None
        except BaseException:  # cancelled (the agent is stopping): leave nothing running
            _kill_group(proc)
            await asyncio.shield(proc.wait())
            raise
    if code != 0:
        tail = _tail(log_path)
        raise CommandFailed(f"{name}: exit status {code}" + (f": {tail}" if tail else ""))
    return CommandResult(tuple(argv), loop.time() - started)
