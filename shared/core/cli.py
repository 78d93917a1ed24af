"""What the command-line programs share: one-line errors, exit codes, and text a terminal
shows without acting on it."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import TypeVar

from shared.core.errors import IppError, SettingsError, mask_dsns

T = TypeVar("T")

#: Files the programs make are their group's to read at most, never every user's (logs,
#: var/, storage files, secrets); set first thing by each entry point.
UMASK = 0o027


def restrict_umask() -> None:
    os.umask(UMASK)


#: Exit codes: 0 ok, 1 the operation failed, 2 the command line or settings are wrong.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


#: Characters a terminal acts on (escape sequences, carriage returns, bells, line breaks)
#: and the invisible ones (C0, DEL, C1 controls, bidirectional overrides), shown as escapes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: object) -> str:
    """``value`` as text a terminal shows and does not act on: a control character of a
    peer's (a fileset name, an error body, a label) is printed as its escape, e.g. ``\\x1b``."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def positive_hours(text: str) -> float:
    """An argparse type: hours above 0, at most a year (``--every``, seed 003's time argument)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of hours") from None
    if not 0 < value <= 24 * 366:
        raise argparse.ArgumentTypeError(f"{text!r}: expected hours above 0 (at most a year)")
    return value


def fail(prog: str, message: str, code: int = EXIT_FAILED) -> int:
    """Print ``prog: error: message`` on stderr (made visible: it may quote a peer) and
    return the exit code."""
    print(f"{prog}: error: {visible(mask_dsns(message))}", file=sys.stderr)
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
