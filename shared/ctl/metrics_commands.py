"""``ippctl metrics`` and ``ippctl plot``: the loading summary and life-cycle counts on the
terminal, and the operators' PNG plots on demand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_OK
from shared.core.settings import Settings
from shared.ctl.output import print_json, table, with_dbs
from shared.db.roles import Databases
from shared.observe import metrics, plots
from shared.psps import configs


def _lifecycle_text(life: metrics.Lifecycle) -> str:
    states = sorted({s for counts in life.runs.values() for s in counts})
    runs = table(
        [[st, *(counts.get(s, 0) for s in states)] for st, counts in life.runs.items()], ["stage", *states]
    )
    totals = "\n".join(f"  {k:<40}{v:>16,}" for k, v in sorted(life.counters.items()))
    files = "\n".join(f"  {p:<40}{n:>16,}" for p, n in sorted(life.filesets.items()))
    return (
        f"Runs by stage and state\n{runs}\n\nDataStore filesets\n{files or '  none'}\n\n"
        f"Agent totals\n{totals or '  none yet'}\n"
    )


async def metrics_show(settings: Settings, args: argparse.Namespace) -> int:
    async def go(dbs: Databases) -> int:
        db = dbs.ipptopsps
        if args.config != "all":
            await configs.load(db, args.config)  # an unknown config is an error, not an empty table
        summary = await metrics.loading_summary(db, args.config)
        life = await metrics.lifecycle(dbs) if args.lifecycle or args.json else None
        if args.json:
            assert life is not None
            print_json(
                {
                    "loading": summary.as_json(),
                    "runs": life.runs,
                    "filesets": life.filesets,
                    "imported": life.imported,
                    "totals": life.counters,
                }
            )
            return EXIT_OK
        reports = await metrics.config_reports(db, args.config)
        print("\n".join(metrics.format_report(r) for r in reports) or "no loading configs\n", end="")
        if life is not None:
            print()
            print(_lifecycle_text(life), end="")
        return EXIT_OK

    return await with_dbs(settings, go)


async def plot(settings: Settings, args: argparse.Namespace) -> int:
    async def go(dbs: Databases) -> int:
        out = Path(args.out) if args.out else settings.plot_dir()
        written = await plots.plot(dbs, args.config, args.kind, out)
        if not written:
            print(f"{args.config}: nothing to plot ({args.kind})")
        for path in written:
            print(path)
        return EXIT_OK

    return await with_dbs(settings, go)


def add_commands(top: Any) -> None:
    p = top.add_parser(
        "metrics", help="the PSPS loading summary (and with --lifecycle the runs, filesets and agent totals)"
    )
    p.add_argument("config", nargs="?", default="all", help="a loading config, or all")
    p.add_argument("--lifecycle", action="store_true", help="also the cleanup/update/distribution side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=metrics_show)
    p = top.add_parser(
        "plot",
        help="write PNG plots: density of pending items per batch type, "
        "progress over time, the life-cycle side",
    )
    p.add_argument("config", help="a loading config (or all for progress and lifecycle)")
    p.add_argument("kind", choices=plots.KINDS)
    p.add_argument("--out", help="directory for the PNG files (default: metrics_plot_dir)")
    p.set_defaults(handler=plot)
