"""``ipp-sim``: the stand-ins for what surrounds the IPP.

``ipp-sim psps`` runs the PSPS side (DXLayer + ODM web service) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from shared.cli import EXIT_FAILED, EXIT_USAGE, fail
from shared.errors import IppError, SettingsError
from shared.log import bind, configure_logging
from shared.settings import load_settings

PROG = "ipp-sim"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Stand-ins for the IPP's neighbours.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("psps", help="the PSPS side: a DXLayer loading published batches into the "
                                "psps database and the ODM web service (odm_port)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    configure_logging(settings)
    bind(agent=f"sim_{args.command}", host=socket.gethostname(), pid=os.getpid())
    from sim.psps.service import main_async

    try:
        return asyncio.run(main_async(settings))
    except IppError as exc:
        return fail(PROG, str(exc), EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
