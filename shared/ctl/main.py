"""``ippctl``: the operators' command line.

This module wires sub-commands to small functions; each function does one operation and
prints its result. Errors are one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from shared.core.cli import guarded, restrict_umask
from shared.core.errors import DbError, IppError
from shared.core.log import configure_logging
from shared.core.settings import Settings, load_settings
from shared.ctl import (
    clients_commands,
    console_commands,
    db_commands,
    demo_commands,
    dist_commands,
    metrics_commands,
    psps_commands,
    runs_commands,
    storage_commands,
)

PROG = "ippctl"
Handler = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
GROUPS = (
    db_commands,
    clients_commands,
    storage_commands,
    runs_commands,
    dist_commands,
    psps_commands,
    metrics_commands,
    console_commands,
    demo_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate the IPP data-lifecycle agents.")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(top)
    return parser


def main(argv: list[str] | None = None) -> int:
    restrict_umask()
    args = build_parser().parse_args(argv)

    def run() -> int:
        settings = load_settings()
        configure_logging(settings, stream=sys.stderr)
        handler: Handler = args.handler
        try:
            return asyncio.run(handler(settings, args))
        except DbError as exc:
            raise IppError(str(exc)) from None

    return guarded(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
