"""``ippctl``: the operators' command line.

This module wires sub-commands to small functions; each function does one operation and
prints its result. Errors are one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from shared import mdc, runio, runs
from shared.cli import EXIT_FAILED, EXIT_OK, guarded
from shared.db import Database
from shared.errors import DbError, IppError
from shared.localdb import LocalMariaDB
from shared.log import configure_logging
from shared.queries import Q
from shared.schema import (
    CODE_SCHEMA_VERSION,
    create_database,
    database_version,
    upgrade,
    upgrade_lock,
)
from shared.settings import Settings, load_settings, parse_dsn
from shared.stages import OPERATOR_TARGETS, STAGES
from shared.storage import Storage

PROG = "ippctl"
Handler = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


# -- helpers -------------------------------------------------------------------------------


async def _connect(settings: Settings) -> Database:
    """Connect for a command: fail at once (no reconnect wait) with a clear message."""
    return await Database.connect(settings, wait_s=0, pool_size=2)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=_json_default, indent=2))


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _local(settings: Settings) -> LocalMariaDB:
    return LocalMariaDB(Path(settings.var_dir) / "mariadb")


# -- db ------------------------------------------------------------------------------------


async def db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    dsn = parse_dsn(settings.effective_dsn())
    async with upgrade_lock(settings, dsn, waiting=lambda m: print(m, file=sys.stderr)):
        created = await create_database(settings, dsn)
        db = await _connect(settings)
        try:
            before = await database_version(db) or 0
            applied = await upgrade(db)
        finally:
            await db.close()
    if created:
        print(f"created database {dsn.database}")
    if applied:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        print(f"{dsn.display()}: schema version {before} -> {applied[-1].version} ({names})")
    else:
        print(f"{dsn.display()}: already at schema version {before}")
    return EXIT_OK


async def db_status(settings: Settings, args: argparse.Namespace) -> int:
    dsn = parse_dsn(settings.effective_dsn())
    print(f"database:        {dsn.display()}" + ("" if settings.db_dsn else " (local default)"))
    if not settings.db_dsn:
        status = _local(settings).status()
        state = f"running, pid {status.pid}, {status.version}" if status.running else "not running"
        print(f"local server:    {state} (data in {status.datadir})")
    print(f"code schema:     {CODE_SCHEMA_VERSION}")
    try:
        db = await _connect(settings)
    except IppError as exc:
        print(f"database schema: unknown ({exc})")
        return EXIT_FAILED
    try:
        version = await database_version(db)
        server = await db.fetch_val(Q.server_version)
    finally:
        await db.close()
    print(f"server:          {server}")
    print(f"database schema: {'none' if version is None else version}"
          + ("" if version == CODE_SCHEMA_VERSION else "  (run 'ippctl db upgrade')"))
    return EXIT_OK if version == CODE_SCHEMA_VERSION else EXIT_FAILED


async def db_start_local(settings: Settings, args: argparse.Namespace) -> int:
    local = _local(settings)
    started = await asyncio.to_thread(local.start)
    print(("started" if started else "already running") + f": local MariaDB, socket {local.socket}")
    if settings.db_dsn:
        print(f"note: IPP_DB_DSN is set ({parse_dsn(settings.db_dsn).display()}), so programs "
              "will not use this local server")
    return EXIT_OK


async def db_stop_local(settings: Settings, args: argparse.Namespace) -> int:
    local = _local(settings)
    stopped = await asyncio.to_thread(local.stop)
    print("stopped local MariaDB" if stopped else "local MariaDB was not running")
    return EXIT_OK


# -- clients -------------------------------------------------------------------------------


def _age(seconds: Any) -> str:
    if seconds is None:
        return ""
    s = float(seconds)
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


async def clients_list(settings: Settings, args: argparse.Namespace) -> int:
    db = await _connect(settings)
    try:
        rows = await db.fetch_all(Q.list_clients, all=bool(args.all))
        flags = await db.fetch_all(Q.list_standing_flags)
    finally:
        await db.close()
    if args.json:
        for row in rows:
            row["counters"] = json.loads(row["counters"]) if row["counters"] else {}
        _print_json({"clients": rows, "standing_flags": flags})
        return EXIT_OK
    table = [
        (r["client_id"], r["agent"], r["host"], r["pid"], r["config"] or "-",
         r["status"] + (f" ({r['command']})" if r["command"] and r["status"] not in
                        ("stopped", "dead") else ""),
         _age(r["heartbeat_age_s"]), r["current_item"] or "-",
         f"{r['items_done']}/{r['items_failed']}", (r["last_error"] or "")[:60])
        for r in rows
    ]
    headers = ("ID", "AGENT", "HOST", "PID", "CONFIG", "STATUS", "HEARTBEAT", "ITEM",
               "DONE/FAILED", "LAST ERROR")
    print(_table(table, headers) if rows else "no clients")
    if flags:
        print("\nstanding flags:")
        print(_table([(f["agent"] or "*", f["host"] or "*", f["config"] or "*", f["command"],
                       f["set_at"], f["set_by"]) for f in flags],
                     ("AGENT", "HOST", "CONFIG", "COMMAND", "SET AT", "SET BY")))
    return EXIT_OK


async def clients_command(settings: Settings, args: argparse.Namespace) -> int:
    command: str = args.command
    if args.id and (args.agent or args.host or args.config):
        raise IppError("give either --id or --agent [--host] [--config], not both")
    if not args.id and args.agent is None:
        raise IppError("say which clients: --id ID, or --agent NAME (or 'all') [--host] [--config]")
    db = await _connect(settings)
    try:
        if args.id:
            changed = await db.execute(Q.command_client, client_id=args.id, command=command)
            if changed != 1:
                row = await db.fetch_one(Q.get_client, client_id=args.id)
                if row is None:
                    raise IppError(f"no client with id {args.id}")
                raise IppError(f"client {args.id} is {row['status']}; nothing to {command}")
            print(f"{command}: client {args.id}")
            return EXIT_OK
        agent = "" if args.agent == "all" else args.agent
        scope = dict(agent=agent, host=args.host or "", config=args.config or "")
        if command == "resume":
            cleared = await db.execute(Q.clear_standing_flags, **scope)
            live = await db.execute(Q.command_matching_clients, command="resume", **scope)
            print(f"resume: cleared {cleared} standing flag(s) for {_scope(scope)}; "
                  f"{live} live client(s) told to resume")
        else:
            who = f"{getpass.getuser()}@{socket.gethostname()}"
            await db.execute(Q.set_standing_flag, command=command, set_by=who, **scope)
            live = await db.execute(Q.command_matching_clients, command=command, **scope)
            print(f"{command}: standing flag set for {_scope(scope)}; {live} live client(s) now "
                  f"told to {command}")
    finally:
        await db.close()
    return EXIT_OK


def _scope(scope: dict[str, str]) -> str:
    return " ".join(f"{k}={v or '*'}" for k, v in scope.items())


# -- storage -------------------------------------------------------------------------------


async def _with_storage(settings: Settings, fn: Callable[[Storage], Awaitable[int]]) -> int:
    db = await _connect(settings)
    try:
        return await fn(Storage(db))
    finally:
        await db.close()


async def storage_volume_add(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        vol = await st.add_volume(args.name, args.root, host=args.host, allocate=not args.no_allocate)
        print(f"added volume {vol.name} at {vol.root}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_volume_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        rows = await st.db.fetch_all(Q.list_volumes)
        if args.json:
            _print_json(rows)
        else:
            print(_table([(r["name"], r["state"], "yes" if r["allocate"] else "no", r["instances"],
                           r["host"] or "-", r["root"]) for r in rows],
                         ("VOLUME", "STATE", "ALLOCATE", "FILES", "HOST", "ROOT"))
                  if rows else "no volumes")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_volume_set(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        await st.set_volume_state(args.name, args.state)
        print(f"volume {args.name} is now {args.state}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_put(settings: Settings, args: argparse.Namespace) -> int:
    source = Path(args.file)
    if not await asyncio.to_thread(source.is_file):
        raise IppError(f"{source}: not a readable file")

    async def go(st: Storage) -> int:
        info = await st.create_from_file(args.key, source)
        print(f"{info.key}  {info.bytes} bytes  md5 {info.md5sum}  on {info.instances[0].volume}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_stat(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        info = await st.stat(args.key)
        data = {"key": info.key, "bytes": info.bytes, "md5sum": info.md5sum,
                "created_at": info.created_at, "gone": info.gone,
                "instances": [{"volume": i.volume, "state": i.state, "path": i.path}
                              for i in info.instances]}
        if args.json:
            _print_json(data)
        else:
            print(f"{info.key}  {info.bytes} bytes  md5 {info.md5sum}"
                  + ("  GONE" if info.gone else ""))
            for i in info.instances:
                print(f"  {i.volume:<12} {i.state:<5} {i.path}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_locate(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        print(await st.locate(args.key))
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_rm(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        await st.delete(args.key)
        print(f"deleted {args.key}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_replicate(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        instance = await st.replicate(args.key, args.volume)
        print(f"{args.key} on {instance.volume}: {instance.path}")
        return EXIT_OK
    return await _with_storage(settings, go)


async def storage_ls(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        for row in await st.list(args.prefix, args.limit):
            print(f"{row['key']}  {row['bytes']}  {row['md5sum']}  {row['instances']} instance(s)")
        return EXIT_OK
    return await _with_storage(settings, go)


def _hours(text: str) -> float:
    """A positive number of hours, for argparse."""
    try:
        hours = float(text)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of hours")
    return hours


async def storage_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Files against rows on every volume that is up; exit 1 if they disagree."""
    async def go(st: Storage) -> int:
        after_s = None if args.remove_temporaries is None else args.remove_temporaries * 3600
        report = await st.audit(remove_temporaries_after_s=after_s)
        if args.json:
            _print_json(dataclasses.asdict(report))
        else:
            print(f"{report.files} files on volumes that are up")
            sections = [("registered but missing", report.missing),
                        ("on disk but not registered", report.orphans),
                        ("temporaries left by killed writers", report.temporaries),
                        ("objects without any instance", report.empty_objects)]
            if after_s is not None:
                sections.append((f"temporaries removed (untouched for {args.remove_temporaries:g}"
                                 " h or more)", report.temporaries_removed))
            for label, items in sections:
                print(f"{label}: {len(items)}")
                for item in items[:20]:
                    print(f"  {item}")
        return EXIT_OK if report.clean else EXIT_FAILED
    return await _with_storage(settings, go)


# -- runs ----------------------------------------------------------------------------------


async def _with_db(settings: Settings, fn: Callable[[Database], Awaitable[int]]) -> int:
    db = await _connect(settings)
    try:
        return await fn(db)
    finally:
        await db.close()


async def runs_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = await runs.list_runs(db, args.stage, state=args.state, label=args.label,
                                    limit=args.limit)
        if args.json:
            _print_json(rows)
        elif rows:
            print(_table([(r["id"], r["state"], r["label"] or "-", r["name"] or "-",
                           r["components"], r["magicked"], r["workdir"] or "-") for r in rows],
                         ("ID", "STATE", "LABEL", "NAME", "COMPONENTS", "MAGICKED", "WORKDIR")))
        else:
            print(f"no {args.stage} runs match")
        return EXIT_OK
    return await _with_db(settings, go)


async def runs_set_state(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        changes = await runs.set_state(
            db, args.stage, args.state, run_id=args.id, label=args.label,
            from_label=args.from_label, only_states=tuple(args.only_state or ()),
            dry_run=args.dry_run)
        for c in changes:
            print(("would set " if args.dry_run else "") + c.describe(args.stage))
        if args.dry_run:
            print(f"dry run: {len(changes)} run(s) would change; nothing was changed")
        return EXIT_OK
    return await _with_db(settings, go)


async def runs_request_update(settings: Settings, args: argparse.Namespace) -> int:
    """Queue an update; with --wait, follow it until the pixels are back (or it fails)."""
    async def go(db: Database) -> int:
        change = await runs.request_update(db, args.stage, args.id)
        print(f"{args.stage} {args.id}: {change.was} -> update requested")
        if not args.wait:
            return EXIT_OK
        return await _wait_update(db, args.stage, args.id, args.timeout)
    return await _with_db(settings, go)


async def _wait_update(db: Database, stage_name: str, run_id: int, timeout_s: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while True:
        run = await runs.get_run(db, stage_name, run_id)
        wait = await db.fetch_one(Q.update_wait_get, stage=stage_name, id=run_id)
        shown = (run["state"], wait["reason"] if wait else None)
        if shown != last and wait is not None:
            print(f"{stage_name} {run_id}: {run['state']}: {wait['reason']}")
        last = shown
        if run["state"] == "full":
            print(f"{stage_name} {run_id}: full: the pixels are back")
            return EXIT_OK
        if run["state"] != "update":
            print(f"{stage_name} {run_id}: now {run['state']}: the update was abandoned",
                  file=sys.stderr)
            return EXIT_FAILED
        if wait is not None and wait["failed"]:
            print(f"{stage_name} {run_id}: update failed: {wait['reason']}", file=sys.stderr)
            return EXIT_FAILED
        if loop.time() > deadline:
            print(f"{stage_name} {run_id}: still in update after {timeout_s:g} s "
                  "(is an update agent running?)", file=sys.stderr)
            return EXIT_FAILED
        await asyncio.sleep(1.0)


async def runs_files(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        files = await runs.run_files(db, args.stage, args.id, md5=args.md5)
        if args.json:
            _print_json([runs.file_dict(f) for f in files])
            return EXIT_OK
        for f in files:
            state = "gone" if f.gone else "exists" if f.exists else "missing"
            fields = [f.component or "-", f.file_class, f.key, state,
                      str(f.bytes) if f.bytes is not None else "-"]
            if args.md5:
                fields.append(f.md5sum or "-")
            print("  ".join(fields))
        return EXIT_OK
    return await _with_db(settings, go)


async def runs_export(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        text = runio.export_text(await runio.export_run(db, args.stage, args.id,
                                                        clean=args.clean))
        if args.output:
            out = Path(args.output)
            tmp = out.with_name(f".{out.name}.tmp")
            await asyncio.to_thread(tmp.write_text, text)
            await asyncio.to_thread(tmp.replace, out)
            print(f"wrote {args.stage} {args.id} to {out}")
        else:
            sys.stdout.write(text)
        return EXIT_OK
    return await _with_db(settings, go)


async def runs_import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IppError(f"{path}: cannot read: {exc}") from None

    async def go(db: Database) -> int:
        result = await runio.import_run(db, text, str(path))
        if result.already_present:
            print(f"{result.stage} {result.run_id}: already present with identical rows")
        else:
            print(f"imported {result.stage} {result.run_id}: {result.rows} rows")
        return EXIT_OK
    return await _with_db(settings, go)


# -- sim -----------------------------------------------------------------------------------


async def sim_survey(settings: Settings, args: argparse.Namespace) -> int:
    from sim.survey import Survey, SurveyOptions, ensure_volumes

    dvo_dir = Path(args.dvo_dir) if args.dvo_dir else Path(settings.var_dir) / "dvo" / args.site
    options = SurveyOptions(exposures=args.exposures, chips=args.chips, seed=args.seed,
                            site=args.site, size=args.size, stars_per_chip=args.stars_per_chip,
                            dvo_dir=dvo_dir)
    try:
        options.validate()
    except ValueError as exc:
        raise IppError(str(exc)) from None

    async def go(db: Database) -> int:
        storage = Storage(db)
        await ensure_volumes(storage, Path(settings.var_dir), args.site)
        summary = await Survey(db, storage, options).run()
        if args.json:
            _print_json(summary.__dict__)
        else:
            print(f"survey {args.site}: {len(summary.exposures)} exposures, "
                  f"{summary.detections} detections, {summary.files} files "
                  f"({summary.bytes / 1e6:.1f} MB)")
            for stage_name, ids_ in (("chip", summary.chip_runs), ("camera", summary.cam_runs),
                                     ("warp", summary.warp_runs), ("stack", summary.stack_runs),
                                     ("diff", summary.diff_runs)):
                shown = f"{ids_[0]}..{ids_[-1]}" if ids_ else "none"
                print(f"  {stage_name:<6} runs: {len(ids_):>4}  ids {shown}")
            print(f"  DVO database: {summary.dvo_dir}")
        return EXIT_OK
    return await _with_db(settings, go)


# -- mdc -----------------------------------------------------------------------------------


async def mdc_check(settings: Settings, args: argparse.Namespace) -> int:
    block = mdc.load(Path(args.file))
    print(f"{args.file}: ok, {len(block.entries)} top-level entries")
    return EXIT_OK


# -- wiring --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Operate the IPP data-lifecycle agents.")
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    db = top.add_parser("db", help="the database: schema, local server").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    db.add_parser("upgrade", help="create the database if needed and apply migrations"
                  ).set_defaults(handler=db_upgrade)
    db.add_parser("status", help="where the database is and its schema version"
                  ).set_defaults(handler=db_status)
    db.add_parser("start-local", help="start the private MariaDB under var/"
                  ).set_defaults(handler=db_start_local)
    db.add_parser("stop-local", help="stop the private MariaDB under var/"
                  ).set_defaults(handler=db_stop_local)

    clients = top.add_parser("clients", help="agent processes: list, pause, resume, stop"
                             ).add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = clients.add_parser("list", help="every agent client with its heartbeat and progress")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all", action="store_true", help="include clients ended over 24 h ago")
    ls.set_defaults(handler=clients_list)
    for command in ("pause", "resume", "stop"):
        p = clients.add_parser(command, help=f"{command} one client (--id) or a standing "
                                             "set (--agent [--host] [--config])")
        p.add_argument("--id", help="one client id")
        p.add_argument("--agent", help="an agent name, or 'all'")
        p.add_argument("--host")
        p.add_argument("--config")
        p.set_defaults(handler=clients_command, command=command)

    storage = top.add_parser("storage", help="neb:// storage: volumes and files"
                             ).add_subparsers(dest="action", required=True, metavar="ACTION")
    vol = storage.add_parser("volume", help="storage volumes").add_subparsers(
        dest="vaction", required=True, metavar="ACTION")
    p = vol.add_parser("add", help="register a volume (a directory)")
    p.add_argument("name")
    p.add_argument("root")
    p.add_argument("--host", default="")
    p.add_argument("--no-allocate", action="store_true", help="do not place new files here")
    p.set_defaults(handler=storage_volume_add)
    p = vol.add_parser("list", help="volumes with their state and file counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=storage_volume_list)
    p = vol.add_parser("set", help="mark a volume up, down or lost")
    p.add_argument("name")
    p.add_argument("state", choices=["up", "down", "lost"])
    p.set_defaults(handler=storage_volume_set)
    p = storage.add_parser("put", help="store a local file under a new key")
    p.add_argument("key")
    p.add_argument("file")
    p.set_defaults(handler=storage_put)
    for name, handler, text in (("stat", storage_stat, "size, md5 and instances of a key"),
                                ("locate", storage_locate, "path of a readable instance"),
                                ("rm", storage_rm, "delete every instance of a key")):
        p = storage.add_parser(name, help=text)
        p.add_argument("key")
        if name == "stat":
            p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
    p = storage.add_parser("replicate", help="copy a key to another volume")
    p.add_argument("key")
    p.add_argument("volume")
    p.set_defaults(handler=storage_replicate)
    p = storage.add_parser("ls", help="list keys by path prefix")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(handler=storage_ls)
    p = storage.add_parser("audit", help="compare the files on every volume that is up with "
                                         "their rows (exit 1 if they disagree)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--remove-temporaries", type=_hours, metavar="HOURS", nargs="?", const=6.0,
                   help="delete temporaries nobody has written to for HOURS (default 6)")
    p.set_defaults(handler=storage_audit)

    r = top.add_parser("runs", help="processing runs: list, set state, files, export/import"
                       ).add_subparsers(dest="action", required=True, metavar="ACTION")
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
    which.add_argument("--label", help="the runs with this label; with --from-label, the label "
                       "they are given (e.g. second_pass)")
    p.add_argument("--state", required=True, choices=list(OPERATOR_TARGETS))
    p.add_argument("--from-label", metavar="L", help="take the runs labelled L and relabel them "
                   "--label in the same transaction (a second pass, seed 000)")
    p.add_argument("--only-state", action="append", metavar="STATE",
                   help="only the runs now in STATE (repeatable); others are left alone")
    p.add_argument("--dry-run", action="store_true", help="print what would change; change "
                   "nothing")
    p.set_defaults(handler=runs_set_state)
    p = r.add_parser("request-update", help="queue an update of a run (pixels back); "
                     "--wait follows it until it is full")
    p.add_argument("--stage", required=True, choices=[s for s in stages if s != "raw"])
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--wait", action="store_true", help="wait until the run is full again")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="with --wait: give up after this many seconds (default 3600)")
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
    p.set_defaults(handler=runs_import)

    sim = top.add_parser("sim", help="stand-ins: the synthetic survey").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = sim.add_parser("survey", help="generate a seeded synthetic survey with real files")
    p.add_argument("--exposures", type=int, required=True)
    p.add_argument("--chips", type=int, required=True, help="chips per exposure (1..60)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--site", default="ipp", help="names volumes, paths and the DVO database")
    p.add_argument("--size", type=int, default=64, help="chip and skycell size in pixels")
    p.add_argument("--stars-per-chip", type=int, default=40)
    p.add_argument("--dvo-dir", help="DVO catalog directory (default var/dvo/SITE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=sim_survey)

    m = top.add_parser("mdc", help="mdc files").add_subparsers(dest="action", required=True,
                                                               metavar="ACTION")
    p = m.add_parser("check", help="parse an mdc file and report the first error")
    p.add_argument("file")
    p.set_defaults(handler=mdc_check)

    # they use this module's helpers
    from shared import ippctl_demo, ippctl_dist, ippctl_metrics, ippctl_psps
    ippctl_dist.add_commands(top)
    ippctl_psps.add_commands(top)
    ippctl_metrics.add_commands(top)
    ippctl_demo.add_commands(top)
    return parser


def main(argv: list[str] | None = None) -> int:
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
