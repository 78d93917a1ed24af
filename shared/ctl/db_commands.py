"""``ippctl db``: the schema (upgrade, status) and the private local server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_FAILED, EXIT_OK
from shared.core.errors import IppError, SettingsError
from shared.core.settings import Settings, parse_dsn
from shared.db.database import Database
from shared.db.galera import LocalGalera
from shared.db.localdb import LocalMariaDB
from shared.db.queries import Q
from shared.db.schema import (
    CODE_SCHEMA_VERSION,
    IPPTOPSPS,
    PROCESSING,
    ROLES,
    create_database,
    database_roles,
    database_version,
    upgrade,
    upgrade_lock,
)


def _local(settings: Settings) -> LocalMariaDB:
    return LocalMariaDB(Path(settings.var_dir) / "mariadb")


# -- db ------------------------------------------------------------------------------------


async def db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    """Create and upgrade the processing database and, with ``ipptopsps_dsn``, the ippToPsps
    database: each new one takes only its own role's tables (shared.db.schema)."""
    if not settings.ipptopsps_separate():
        await _upgrade_one(settings, settings.effective_dsn(), ROLES)
        return EXIT_OK
    await _upgrade_one(settings, settings.effective_dsn(), frozenset({PROCESSING}))
    await _upgrade_one(settings, settings.ipptopsps_effective_dsn(), frozenset({IPPTOPSPS}))
    return EXIT_OK


async def _upgrade_one(settings: Settings, url: str, roles: frozenset[str]) -> None:
    dsn = parse_dsn(url)
    created = await create_database(settings, dsn)
    async with upgrade_lock(settings, dsn, waiting=lambda m: print(m, file=sys.stderr)):
        db = await Database.connect(settings, dsn, wait_s=0, pool_size=2, sync_wait=1)
        try:
            before = await database_version(db) or 0
            applied = await upgrade(db, roles)
            held = ", ".join(sorted(await database_roles(db)))
        finally:
            await db.close()
    if created:
        print(f"created database {dsn.database} ({held} tables)")
    if applied:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        print(f"{dsn.display()}: schema version {before} -> {applied[-1].version} ({names})")
    else:
        print(f"{dsn.display()}: already at schema version {before}")


async def _status_one(settings: Settings, label: str, url: str) -> bool:
    """Print one database's server, schema version and roles; True when it is current."""
    try:
        db = await Database.connect(settings, url, wait_s=0, pool_size=2, sync_wait=1)
    except IppError as exc:
        print(f"{label} schema: unknown ({exc})")
        return False
    try:
        version = await database_version(db)
        server = await db.fetch_val(Q.server_version)
        held = ", ".join(sorted(await database_roles(db))) if version is not None else "-"
    finally:
        await db.close()
    print(f"server:          {server}")
    print(
        f"{label} schema: {'none' if version is None else version} ({held} tables)"
        + ("" if version == CODE_SCHEMA_VERSION else "  (run 'ippctl db upgrade')")
    )
    return version == CODE_SCHEMA_VERSION


async def db_status(settings: Settings, args: argparse.Namespace) -> int:
    dsn = parse_dsn(settings.effective_dsn())
    print(f"database:        {dsn.display()}" + ("" if settings.db_dsn else " (local default)"))
    if not settings.db_dsn:
        status = _local(settings).status()
        state = f"running, pid {status.pid}, {status.version}" if status.running else "not running"
        print(f"local server:    {state} (data in {status.datadir})")
    print(f"code schema:     {CODE_SCHEMA_VERSION}")
    ok = await _status_one(settings, "database", settings.effective_dsn())
    if settings.ipptopsps_separate():
        print(f"ippToPsps:       {parse_dsn(settings.ipptopsps_dsn).display()}")
        ok = await _status_one(settings, "ippToPsps", settings.ipptopsps_dsn) and ok
    return EXIT_OK if ok else EXIT_FAILED


def _galera(settings: Settings, args: argparse.Namespace) -> LocalGalera:
    return LocalGalera(Path(settings.var_dir) / "galera", args.galera)


def _print_galera(settings: Settings, cluster: LocalGalera) -> None:
    database = settings.db_name or settings.local_db_name
    for node, status in zip(cluster.nodes, cluster.status(), strict=True):
        size = f", cluster size {status.cluster_size}" if status.running else ""
        print(f"  {status.name}: {status.state}{size}  IPP_DB_DSN={node.dsn(database)}")


async def galera_start(settings: Settings, args: argparse.Namespace) -> int:
    cluster = _galera(settings, args)
    if args.node:
        await asyncio.to_thread(cluster.start_node, args.node)
        print(f"started node {args.node} of the local Galera cluster (synced)")
    else:
        started = await asyncio.to_thread(cluster.start)
        print(
            f"local Galera cluster of {cluster.size}: "
            + (f"started node(s) {', '.join(map(str, started))}" if started else "already running")
        )
    _print_galera(settings, cluster)
    return EXIT_OK


async def galera_stop(settings: Settings, args: argparse.Namespace) -> int:
    cluster = _galera(settings, args)
    if args.node:
        await asyncio.to_thread(cluster.node(args.node).stop, kill=args.kill)
        print(f"{'killed' if args.kill else 'stopped'} node {args.node} of the local Galera cluster")
    else:
        stopped = await asyncio.to_thread(cluster.stop, kill=args.kill)
        print(f"stopped node(s) {', '.join(map(str, stopped))}" if stopped else "no node was running")
    return EXIT_OK


def _check_galera_args(args: argparse.Namespace) -> None:
    if args.node and not args.galera:
        raise SettingsError("--node K names a node of the local Galera cluster: give --galera N too")
    if args.galera and args.node and not 1 <= args.node <= args.galera:
        raise SettingsError(f"--node {args.node}: the cluster has nodes 1 to {args.galera}")


async def db_start_local(settings: Settings, args: argparse.Namespace) -> int:
    _check_galera_args(args)
    if args.galera:
        return await galera_start(settings, args)
    local = _local(settings)
    started = await asyncio.to_thread(local.start)
    print(("started" if started else "already running") + f": local MariaDB, socket {local.socket}")
    if settings.db_dsn:
        print(
            f"note: IPP_DB_DSN is set ({parse_dsn(settings.db_dsn).display()}), so programs "
            "will not use this local server"
        )
    return EXIT_OK


async def db_stop_local(settings: Settings, args: argparse.Namespace) -> int:
    _check_galera_args(args)
    if args.galera:
        return await galera_stop(settings, args)
    local = _local(settings)
    stopped = await asyncio.to_thread(local.stop, kill=args.kill)
    done = "killed" if args.kill else "stopped"
    print(f"{done} local MariaDB" if stopped else "local MariaDB was not running")
    return EXIT_OK


def add_commands(top: Any) -> None:
    db = top.add_parser("db", help="the database: schema, local server").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    db.add_parser("upgrade", help="create the database if needed and apply migrations").set_defaults(
        handler=db_upgrade
    )
    db.add_parser("status", help="where the database is and its schema version").set_defaults(
        handler=db_status
    )
    start = db.add_parser("start-local", help="start the private MariaDB (or Galera cluster) under var/")
    stop = db.add_parser("stop-local", help="stop the private MariaDB (or Galera cluster) under var/")
    for parser in (start, stop):
        parser.add_argument(
            "--galera",
            type=int,
            metavar="N",
            default=0,
            help="an N-node Galera cluster under var/galera/ on 127.0.0.1 ports 3311.. instead",
        )
        parser.add_argument("--node", type=int, metavar="K", default=0, help="only node K of the cluster")
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean shutdown")
    start.set_defaults(handler=db_start_local)
    stop.set_defaults(handler=db_stop_local)
