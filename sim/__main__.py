"""``ipp-sim``: the stand-ins for what surrounds the IPP.

``ipp-sim psps`` runs the PSPS side (DXLayer + ODM web service) until SIGTERM; ``ipp-sim
survey`` generates a seeded synthetic survey (the processor's products, real files). As with
``ipp-agent``, stop signals are caught before anything heavy is imported, so a SIGTERM during
start-up ends in a clean exit 0 (:mod:`shared.runtime.stopsignals`).
"""

from __future__ import annotations

import argparse
import sys

from shared.runtime.stopsignals import STOP

PROG = "ipp-sim"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Stand-ins for the IPP's neighbours.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "psps",
        help="the PSPS side: a DXLayer loading published batches into the "
        "psps database and the ODM web service (odm_port)",
    )
    from sim import survey_command

    survey_command.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    STOP.catch()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "survey":
        from sim.survey_command import run_survey

        return run_survey(args)
    from sim.psps.service import run_stand_in

    return run_stand_in(args.command)


if __name__ == "__main__":
    sys.exit(main())
