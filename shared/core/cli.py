"""What the command-line programs share: one-line errors and exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from shared.core.errors import IppError, SettingsError, mask_dsns

T = TypeVar("T")

#: Exit codes: 0 ok, 1 the operation failed, 2 the command line or settings are wrong.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def fail(prog: str, message: str, code: int = EXIT_FAILED) -> int:
    """Print ``prog: error: message`` on stderr and return the exit code."""
    print(f"{prog}: error: {mask_dsns(message)}", file=sys.stderr)
    return code


def ask_line(prompt: str) -> str | None:
    """Print ``prompt`` and read one line of stdin; None at the end of input."""
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\n")


def guarded(prog: str, fn: Callable[[], int]) -> int:
    """Run a command; an IppError becomes one line on stderr and a non-zero exit code."""
    try:
        return fn()
    except SettingsError as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except IppError as exc:
        return fail(prog, str(exc))
    except KeyboardInterrupt:
        return fail(prog, "interrupted", 130)
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
