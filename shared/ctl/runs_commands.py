"""``ippctl runs`` (list, set state, request update, files, export/import) and ``ippctl mdc``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_FAILED, EXIT_OK, visible
from shared.core.errors import IppError
from shared.core.settings import Settings
from shared.ctl.output import print_json, table, with_db
from shared.db.database import Database
from shared.db.queries import Q
from shared.formats import mdc
from shared.processing import runio, runs
from shared.processing.stages import OPERATOR_TARGETS, STAGES


async def runs_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = await runs.list_runs(db, args.stage, state=args.state, label=args.label, limit=args.limit)
        if args.json:
            print_json(rows)
        elif rows:
            print(
                table(
                    [
                        (
                            r["id"],
                            r["state"],
                            r["label"] or "-",
                            r["name"] or "-",
                            r["components"],
                            r["magicked"],
                            r["workdir"] or "-",
                        )
                        for r in rows
                    ],
                    ("ID", "STATE", "LABEL", "NAME", "COMPONENTS", "MAGICKED", "WORKDIR"),
                )
            )
        else:
            print(f"no {args.stage} runs match")
        return EXIT_OK

    return await with_db(settings, go)


async def runs_set_state(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        changes = await runs.set_state(
            db,
            args.stage,
            args.state,
            run_id=args.id,
            label=args.label,
            from_label=args.from_label,
            only_states=tuple(args.only_state or ()),
            dry_run=args.dry_run,
        )
        for c in changes:
            print(("would set " if args.dry_run else "") + c.describe(args.stage))
        if args.dry_run:
            print(f"dry run: {len(changes)} run(s) would change; nothing was changed")
        return EXIT_OK

    return await with_db(settings, go)


async def runs_request_update(settings: Settings, args: argparse.Namespace) -> int:
    """Queue an update; with --wait, follow it until the pixels are back (or it fails)."""

    async def go(db: Database) -> int:
        change = await runs.request_update(db, args.stage, args.id)
        print(f"{args.stage} {args.id}: {change.was} -> update requested")
        if not args.wait:
            return EXIT_OK
        return await _wait_update(db, args.stage, args.id, args.timeout)

    return await with_db(settings, go)


async def _wait_update(db: Database, stage_name: str, run_id: int, timeout_s: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while True:
        run = await runs.get_run(db, stage_name, run_id)
        wait = await db.fetch_one(Q.update_wait_get, stage=stage_name, id=run_id)
        shown = (run["state"], wait["reason"] if wait else None)
        if shown != last and wait is not None:
            print(f"{stage_name} {run_id}: {run['state']}: {visible(wait['reason'])}")
        last = shown
        if run["state"] == "full":
            print(f"{stage_name} {run_id}: full: the pixels are back")
            return EXIT_OK
        if run["state"] != "update":
            print(f"{stage_name} {run_id}: now {run['state']}: the update was abandoned", file=sys.stderr)
            return EXIT_FAILED
        if wait is not None and wait["failed"]:
            print(f"{stage_name} {run_id}: update failed: {visible(wait['reason'])}", file=sys.stderr)
            return EXIT_FAILED
        if loop.time() > deadline:
            print(
                f"{stage_name} {run_id}: still in update after {timeout_s:g} s (is an update agent running?)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        await asyncio.sleep(1.0)


async def runs_files(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        files = await runs.run_files(db, args.stage, args.id, md5=args.md5)
        if args.json:
            print_json([runs.file_dict(f) for f in files])
            return EXIT_OK
        for f in files:
            state = "gone" if f.gone else "exists" if f.exists else "missing"
            fields = [
                f.component or "-",
                f.file_class,
                f.key,
                state,
                str(f.bytes) if f.bytes is not None else "-",
            ]
            if args.md5:
                fields.append(f.md5sum or "-")
            print("  ".join(fields))
        return EXIT_OK

    return await with_db(settings, go)


async def runs_export(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        text = runio.export_text(await runio.export_run(db, args.stage, args.id, clean=args.clean))
        if args.output:
            out = Path(args.output)
            tmp = out.with_name(f".{out.name}.tmp")
            await asyncio.to_thread(tmp.write_text, text)
            await asyncio.to_thread(tmp.replace, out)
            print(f"wrote {args.stage} {args.id} to {out}")
        else:
            sys.stdout.write(text)
        return EXIT_OK

    return await with_db(settings, go)


async def runs_import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IppError(f"{path}: cannot read: {exc}") from None

    async def go(db: Database) -> int:
        ignore = bool(args.ignore_unknown_columns)
        result = await runio.import_run(db, text, str(path), ignore_unknown_columns=ignore)
        if result.ignored_columns:
            print(f"left out (not in this database): {', '.join(result.ignored_columns)}", file=sys.stderr)
        if result.already_present:
            print(f"{result.stage} {result.run_id}: already present with identical rows")
        else:
            print(f"imported {result.stage} {result.run_id}: {result.rows} rows")
        return EXIT_OK

    return await with_db(settings, go)


# -- mdc -----------------------------------------------------------------------------------


async def mdc_check(settings: Settings, args: argparse.Namespace) -> int:
    block = mdc.load(Path(args.file))
    for warning in block.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok, {len(block.entries)} top-level entries")
    return EXIT_OK


def add_commands(top: Any) -> None:
    r = top.add_parser("runs", help="processing runs: list, set state, files, export/import").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    stages = list(STAGES)
    p = r.add_parser("list", help="runs of a stage")
    p.add_argument("--stage", required=True, choices=stages)
    p.add_argument("--state")
    p.add_argument("--label")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=runs_list)
    p = r.add_parser("set-state", help="ask for cleanup or update of runs (REFERENCE 1 rules)")
    p.add_argument("--stage", required=True, choices=stages)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int)
    which.add_argument(
        "--label",
        help="the runs with this label; with --from-label, the label they are given (e.g. second_pass)",
    )
    p.add_argument("--state", required=True, choices=list(OPERATOR_TARGETS))
    p.add_argument(
        "--from-label",
        metavar="L",
        help="take the runs labelled L and relabel them "
        "--label in the same transaction (a second pass, seed 000)",
    )
    p.add_argument(
        "--only-state",
        action="append",
        metavar="STATE",
        help="only the runs now in STATE (repeatable); others are left alone",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")
    p.set_defaults(handler=runs_set_state)
    p = r.add_parser(
        "request-update", help="queue an update of a run (pixels back); --wait follows it until it is full"
    )
    p.add_argument("--stage", required=True, choices=[s for s in stages if s != "raw"])
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--wait", action="store_true", help="wait until the run is full again")
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="with --wait: give up after this many seconds (default 3600)",
    )
    p.set_defaults(handler=runs_request_update)
    p = r.add_parser("files", help="every product file of a run")
    p.add_argument("--stage", required=True, choices=stages)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--md5", action="store_true", help="compute each file's md5 (reads them)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=runs_files)
    p = r.add_parser("export", help="a run's rows as an mdc file (REFERENCE 4)")
    p.add_argument("--stage", required=True, choices=stages)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--clean", action="store_true", help="export full rows as cleaned")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(handler=runs_export)
    p = r.add_parser("import", help="insert a run exported elsewhere (one transaction)")
    p.add_argument("file")
    p.add_argument(
        "--ignore-unknown-columns",
        action="store_true",
        help="leave out the values of columns this database lacks (listed on stderr) instead of refusing",
    )
    p.set_defaults(handler=runs_import)

    m = top.add_parser("mdc", help="mdc files").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = m.add_parser("check", help="parse an mdc file and report the first error")
    p.add_argument("file")
    p.set_defaults(handler=mdc_check)
