"""``ipp-sim survey``: generate a seeded synthetic survey with real files.

It lives beside the stand-ins, not in ``ippctl``: the IPP's own code never imports ``sim``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_OK, guarded
from shared.core.errors import DbError, IppError
from shared.core.log import configure_logging
from shared.core.settings import Settings, load_settings
from shared.ctl.output import print_json, with_db
from shared.db.database import Database
from shared.storage.store import Storage


async def sim_survey(settings: Settings, args: argparse.Namespace) -> int:
    from sim.survey import Survey, SurveyOptions, ensure_volumes

    dvo_dir = Path(args.dvo_dir) if args.dvo_dir else Path(settings.var_dir) / "dvo" / args.site
    options = SurveyOptions(
        exposures=args.exposures,
        chips=args.chips,
        seed=args.seed,
        site=args.site,
        size=args.size,
        stars_per_chip=args.stars_per_chip,
        dvo_dir=dvo_dir,
    )
    try:
        options.validate()
    except ValueError as exc:
        raise IppError(str(exc)) from None

    async def go(db: Database) -> int:
        storage = Storage(db)
        await ensure_volumes(storage, Path(settings.var_dir), args.site)
        summary = await Survey(db, storage, options).run()
        if args.json:
            print_json(summary.__dict__)
        else:
            print(
                f"survey {args.site}: {len(summary.exposures)} exposures, "
                f"{summary.detections} detections, {summary.files} files "
                f"({summary.bytes / 1e6:.1f} MB)"
            )
            for stage_name, ids_ in (
                ("chip", summary.chip_runs),
                ("camera", summary.cam_runs),
                ("warp", summary.warp_runs),
                ("stack", summary.stack_runs),
                ("diff", summary.diff_runs),
            ):
                shown = f"{ids_[0]}..{ids_[-1]}" if ids_ else "none"
                print(f"  {stage_name:<6} runs: {len(ids_):>4}  ids {shown}")
            print(f"  DVO database: {summary.dvo_dir}")
        return EXIT_OK

    return await with_db(settings, go)


def add_commands(top: Any) -> None:
    p = top.add_parser("survey", help="generate a seeded synthetic survey with real files")
    p.add_argument("--exposures", type=int, required=True)
    p.add_argument("--chips", type=int, required=True, help="chips per exposure (1..60)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--site", default="ipp", help="names volumes, paths and the DVO database")
    p.add_argument("--size", type=int, default=64, help="chip and skycell size in pixels")
    p.add_argument("--stars-per-chip", type=int, default=40)
    p.add_argument("--dvo-dir", help="DVO catalog directory (default var/dvo/SITE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=sim_survey)


def run_survey(args: argparse.Namespace) -> int:
    """``ipp-sim survey ...``: one line on stderr and exit 1 on an error, as ippctl does."""

    def run() -> int:
        settings = load_settings()
        configure_logging(settings, stream=sys.stderr)
        try:
            return asyncio.run(sim_survey(settings, args))
        except DbError as exc:
            raise IppError(str(exc)) from None

    return guarded("ipp-sim", run)
