"""``ippctl clients``: agent processes, their heartbeats and control (pause, resume, stop)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

from shared.core.cli import EXIT_OK
from shared.core.errors import IppError
from shared.core.settings import Settings
from shared.ctl.output import print_json, table
from shared.db.database import Database
from shared.db.roles import opened
from shared.db.schema import PROCESSING
from shared.runtime import control

# -- clients -------------------------------------------------------------------------------


async def clients_list(settings: Settings, args: argparse.Namespace) -> int:
    """Every client and standing flag, of the processing database and (when it is separate)
    the ippToPsps one, where the loading side's agents register."""
    async with _homes(settings) as homes:
        rows, flags = await control.clients_and_flags(homes, every=bool(args.all))
    if args.json:
        for row in rows:
            row["counters"] = json.loads(row["counters"]) if row["counters"] else {}
        print_json({"clients": rows, "standing_flags": flags})
        return EXIT_OK
    lines = [
        (
            r["client_id"],
            r["agent"],
            r["host"],
            r["pid"],
            r["config"] or "-",
            r["status"]
            + (f" ({r['command']})" if r["command"] and r["status"] not in ("stopped", "dead") else ""),
            control.heartbeat_age(r["heartbeat_age_s"]),
            r["current_item"] or "-",
            f"{r['items_done']}/{r['items_failed']}",
            (r["last_error"] or "")[:60],
        )
        for r in rows
    ]
    headers = (
        "ID",
        "AGENT",
        "HOST",
        "PID",
        "CONFIG",
        "STATUS",
        "HEARTBEAT",
        "ITEM",
        "DONE/FAILED",
        "LAST ERROR",
    )
    print(table(lines, headers) if rows else "no clients")
    if flags:
        print("\nstanding flags:")
        print(
            table(
                [
                    (
                        f["agent"] or "*",
                        f["host"] or "*",
                        f["config"] or "*",
                        f["command"],
                        f["set_at"],
                        f["set_by"],
                    )
                    for f in flags
                ],
                ("AGENT", "HOST", "CONFIG", "COMMAND", "SET AT", "SET BY"),
            )
        )
    return EXIT_OK


async def clients_command(settings: Settings, args: argparse.Namespace) -> int:
    command: str = args.command
    if args.id and (args.agent or args.host or args.config):
        raise IppError("give either --id or --agent [--host] [--config], not both")
    if not args.id and args.agent is None:
        raise IppError("say which clients: --id ID, or --agent NAME (or 'all') [--host] [--config]")
    async with _homes(settings) as homes:
        if args.id:
            print(await control.command_client_anywhere(homes, args.id, command))
            return EXIT_OK
        scope = control.Scope("" if args.agent == "all" else args.agent, args.host or "", args.config or "")
        set_by = f"{getpass.getuser()}@{socket.gethostname()}"
        print(await control.command_scope_everywhere(homes, scope, command, set_by))
    return EXIT_OK


@contextlib.asynccontextmanager
async def _homes(settings: Settings) -> AsyncIterator[list[Database]]:
    async with opened(
        settings, PROCESSING, with_ipptopsps=True, wait_s=0, pool_size=2, sync_wait=1, check=False
    ) as dbs:
        yield dbs.homes()


def add_commands(top: Any) -> None:
    clients = top.add_parser("clients", help="agent processes: list, pause, resume, stop").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    ls = clients.add_parser("list", help="every agent client with its heartbeat and progress")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all", action="store_true", help="include clients ended over 24 h ago")
    ls.set_defaults(handler=clients_list)
    for command in ("pause", "resume", "stop"):
        p = clients.add_parser(
            command, help=f"{command} one client (--id) or a standing set (--agent [--host] [--config])"
        )
        p.add_argument("--id", help="one client id")
        p.add_argument("--agent", help="an agent name, or 'all'")
        p.add_argument("--host")
        p.add_argument("--config")
        p.set_defaults(handler=clients_command, command=command)
