"""Operators' control of the agents (pause, resume, stop), one client or a standing set: the
one code path ``ippctl clients`` and the console both take, so their semantics and error
texts are the same. Each function does its writes and returns what to tell the operator."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.core.errors import IppError
from shared.db.database import Database, Row
from shared.db.queries import Q

COMMANDS = ("pause", "resume", "stop")


def heartbeat_age(seconds: object) -> str:
    """A heartbeat's age as ippctl and the console show it: 4.2s, 12m, 3h."""
    if seconds is None:
        return ""
    s = float(seconds)  # type: ignore[arg-type]
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


@dataclass(frozen=True)
class Scope:
    """Which clients a standing flag covers: an agent ('' for all), a host, a config."""

    agent: str = ""
    host: str = ""
    config: str = ""

    def __str__(self) -> str:
        return " ".join(
            f"{k}={v or '*'}"
            for k, v in (("agent", self.agent), ("host", self.host), ("config", self.config))
        )


#: What an agent, host or config of a scope may be: a name as clients rows hold them (a
#: scope with a line break or a space would be stored and match no client, ever).
SCOPE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{0,255}\Z")


def _check(command: str) -> None:
    if command not in COMMANDS:
        raise IppError(f"unknown command {command!r} (commands: {', '.join(COMMANDS)})")


def _check_scope(scope: Scope) -> None:
    for part, value in (("agent", scope.agent), ("host", scope.host), ("config", scope.config)):
        if not SCOPE_NAME.match(value):
            raise IppError(f"{part} {value!r} is not a name (letters, digits and _ . : - only)")


async def command_client(db: Database, client_id: str, command: str) -> str:
    """Tell one live client to pause, resume or stop."""
    _check(command)
    changed = await db.execute(Q.command_client, client_id=client_id, command=command)
    if changed != 1:
        row = await db.fetch_one(Q.get_client, client_id=client_id)
        if row is None:
            raise IppError(f"no client with id {client_id}")
        raise IppError(f"client {client_id} is {row['status']}; nothing to {command}")
    return f"{command}: client {client_id}"


async def command_scope(db: Database, scope: Scope, command: str, set_by: str) -> str:
    """Set (pause, stop) or clear (resume) the standing flag of a scope, and tell its live
    clients at once; a standing flag also holds every client that starts later."""
    _check(command)
    _check_scope(scope)
    params = {"agent": scope.agent, "host": scope.host, "config": scope.config}
    if command == "resume":
        cleared = await db.execute(Q.clear_standing_flags, **params)
        live = await db.execute(Q.command_matching_clients, command="resume", **params)
        return f"resume: cleared {cleared} standing flag(s) for {scope}; {live} live client(s) told to resume"
    await db.execute(Q.set_standing_flag, command=command, set_by=set_by, **params)
    live = await db.execute(Q.command_matching_clients, command=command, **params)
    return f"{command}: standing flag set for {scope}; {live} live client(s) now told to {command}"


async def command_client_anywhere(homes: Sequence[Database], client_id: str, command: str) -> str:
    """:func:`command_client` in whichever of ``homes`` the client registered in (the
    processing database, or the ippToPsps one for the loading side's agents)."""
    for db in homes[:-1]:
        if await db.fetch_one(Q.get_client, client_id=client_id) is not None:
            return await command_client(db, client_id, command)
    return await command_client(homes[-1], client_id, command)


async def command_scope_everywhere(homes: Sequence[Database], scope: Scope, command: str, set_by: str) -> str:
    """:func:`command_scope` in every database agents register in: a flag holds for all."""
    return "\n".join([await command_scope(db, scope, command, set_by) for db in homes])


async def clients_and_flags(homes: Sequence[Database], *, every: bool = False) -> tuple[list[Row], list[Row]]:
    """The clients (``every``: also those ended over 24 h ago) and standing flags of every
    database agents register in."""
    clients: list[Row] = []
    flags: list[Row] = []
    for db in homes:
        clients += await db.fetch_all(Q.list_clients, all=every)
        flags += await db.fetch_all(Q.list_standing_flags)
    return clients, flags
