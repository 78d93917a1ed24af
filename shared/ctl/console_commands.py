"""``ippctl console``: the console's users."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from shared.console import auth
from shared.console.auth import ConsoleError
from shared.core.cli import EXIT_OK
from shared.core.settings import Settings
from shared.ctl.output import print_json, table, with_db
from shared.db.database import Database
from shared.db.queries import Q


def _password(args: argparse.Namespace) -> str:
    """The new password: one line of stdin with --password-stdin, else asked twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ConsoleError("no terminal to ask for the password on: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ConsoleError("the two passwords differ; nothing was saved")
    return first


async def user_add(settings: Settings, args: argparse.Namespace) -> int:
    password = _password(args)

    async def go(db: Database) -> int:
        await auth.add_user(db, args.name, args.role, password)
        print(f"console user {args.name} ({args.role}) added")
        return EXIT_OK

    return await with_db(settings, go)


async def user_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = await db.fetch_all(Q.console_users)
        if args.json:
            print_json(rows)
        else:
            print(table([(r["name"], r["role"], r["created_at"]) for r in rows], ("USER", "ROLE", "ADDED")))
        return EXIT_OK

    return await with_db(settings, go)


def add_commands(top: Any) -> None:
    console = top.add_parser("console", help="the operators' console: its users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    users = console.add_parser("user", help="console users").add_subparsers(
        dest="what", required=True, metavar="ACTION"
    )
    p = users.add_parser("add", help="add a user with a role (the password is asked, or read from stdin)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=auth.ROLES)
    p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    p.set_defaults(handler=user_add)
    p = users.add_parser("list", help="the users and their roles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=user_list)
