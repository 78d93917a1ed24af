"""``ippctl demo``: the whole system on one machine (see shared/ctl/demo.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_FAILED, EXIT_OK
from shared.core.errors import SettingsError
from shared.core.settings import PROJECT_ROOT, Settings
from shared.ctl import demo
from shared.db.galera import LocalGalera


def _plan(args: argparse.Namespace, galera_dsns: tuple[str, ...] = ()) -> demo.Plan:
    return demo.Plan(
        conf=Path(args.conf).resolve(),
        mirror_db=args.mirror_db,
        exposures=args.exposures,
        chips=args.chips,
        seed=args.seed,
        timeout_s=args.timeout,
        faults=args.faults,
        kills=args.kills,
        restart_db=not args.no_db_restart,
        galera_dsns=galera_dsns,
    )


async def demo_command(settings: Settings, args: argparse.Namespace) -> int:
    galera_dsns: tuple[str, ...] = ()
    if args.galera:
        if settings.db_dsn:
            raise SettingsError("ippctl demo --galera runs on the local cluster: unset IPP_DB_DSN")
        cluster = LocalGalera(Path(settings.var_dir) / "galera", args.galera)
        started = await asyncio.to_thread(cluster.start)
        print(f"local Galera cluster of {args.galera} nodes: " + ("started" if started else "running"))
        galera_dsns = tuple(cluster.dsns(settings.db_name or settings.local_db_name))
        settings = replace(settings, db_dsn=galera_dsns[0])
    plan = _plan(args, galera_dsns)
    sh = demo.Shell(settings)
    if galera_dsns:
        sh.env["IPP_DB_DSN"] = galera_dsns[0]
    if args.reset:
        await demo.start_over(sh, plan)
        print("the demo starts from nothing next time")
        return EXIT_OK
    if not args.until_done:
        await demo.run_live(settings, plan, sh)
        return EXIT_OK
    outcome = await demo.until_done(settings, plan, sh)
    if args.json:
        print(json.dumps({"counts": outcome.counts, "problems": outcome.problems}, indent=2, default=str))
    else:
        print(demo.report(outcome), end="")
    return EXIT_FAILED if outcome.problems else EXIT_OK


def add_commands(top: Any) -> None:
    p = top.add_parser(
        "demo",
        help="the whole system on this machine: set up, run every agent "
        "under supervisord, show a live summary until Ctrl-C",
    )
    p.add_argument(
        "--until-done",
        action="store_true",
        help="no screen: walk the survey through its life cycle, check the outcome, "
        "print the final counts and stop (exit 1 if a check failed)",
    )
    p.add_argument("--json", action="store_true", help="with --until-done: the counts as JSON")
    p.add_argument(
        "--reset",
        action="store_true",
        help="start over: stop the demo's agents, drop the databases it created "
        "and remove its data under var_dir (the private server keeps running)",
    )
    p.add_argument(
        "--faults",
        action="store_true",
        help="with --until-done: the fault campaign (SIGKILLs, a database restart, "
        "failing ODM, a volume down and up)",
    )
    p.add_argument(
        "--kills", type=int, default=20, help="with --faults: at least this many SIGKILLs (default 20)"
    )
    p.add_argument(
        "--galera",
        type=int,
        metavar="N",
        default=0,
        help="run on the local N-node Galera cluster (ippctl db start-local --galera N), the "
        "agents spread over its nodes; with --faults its last node is killed and restarted",
    )
    p.add_argument("--no-db-restart", action="store_true", help="with --faults: do not restart the database")
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="with --until-done: give up after this many seconds"
    )
    p.add_argument(
        "--conf",
        default=str(PROJECT_ROOT / "supervisord.conf"),
        help="the supervisord.conf to run (its directory holds logs/ and var/)",
    )
    p.add_argument(
        "--mirror-db", default="ipp_mirror", help="the mirror site's database (as in supervisord.conf)"
    )
    p.add_argument("--exposures", type=int, default=3)
    p.add_argument("--chips", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(handler=demo_command)
