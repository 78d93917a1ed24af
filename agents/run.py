"""What ``ipp-agent NAME`` does once its stop signals are caught: settings, the agent's module,
logging, the database, the schema check, then the runtime's loop.

A stop request that came during start-up ends the process here, cleanly: before the database
is reached nothing is claimed; after that the runtime registers, sees the request at once and
exits without taking work (it marks its clients row stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from agents.registry import agent_modules, load_agent
from shared.claimables import claimables_of
from shared.core.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ask_line, fail, positive_hours
from shared.core.errors import IppError, SettingsError, UnknownAgent
from shared.core.log import bind, configure_logging, get_logger
from shared.core.settings import Settings, load_settings
from shared.db.roles import Databases, opened
from shared.db.schema import IPPTOPSPS, ROLES
from shared.runtime.agent import AgentRunner, AgentSpec
from shared.runtime.clients import ClientIdentity
from shared.runtime.stopsignals import STOP

PROG = "ipp-agent"


def _parser(settings: Settings | None) -> argparse.ArgumentParser:
    known = ", ".join(sorted(agent_modules(settings))) if settings else "see the docs"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Run one IPP agent under the shared runtime. Agents: {known}.",
    )
    parser.add_argument("name", help="the agent to run")
    parser.add_argument(
        "--config",
        default="",
        help="the configuration this agent works on: a name, 'all', or 'edit' (ask for one and "
        "its fields on this terminal first, then run with it)",
    )
    parser.add_argument("--once", action="store_true", help="process what is pending, then exit")
    parser.add_argument(
        "--every",
        type=positive_hours,
        metavar="HOURS",
        help="work a whole pass, then begin the next one HOURS after this one began",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="also write the log to DIR/<agent>_<config>_<host>_<pid>.log (default: the log_dir "
        "setting, logs/, when not under supervisord or systemd)",
    )
    return parser


async def _run(spec: AgentSpec, settings: Settings, args: argparse.Namespace) -> int:
    log = get_logger("runtime")
    asked = asyncio.Event()
    with STOP.delivered_by(asyncio.get_running_loop()), STOP.listening(lambda _: asked.set()):
        async with contextlib.AsyncExitStack() as stack:
            try:
                dbs = await _unless_asked(
                    stack.enter_async_context(
                        opened(settings, spec.database, with_ipptopsps=spec.opens_ipptopsps)
                    ),
                    asked,
                )
            except IppError as exc:
                log.error("startup_failed", error=str(exc))
                return fail(PROG, str(exc))
            if dbs is None:
                return _stopped_in_startup(log, "connecting to the database")
            try:
                await _config_exists(spec, dbs, args.config)
            except IppError as exc:
                log.error("startup_failed", error=str(exc))
                return fail(PROG, str(exc))
            identity = ClientIdentity.fresh(spec.name, args.config)
            home = dbs.home(spec.database)
            runner = AgentRunner(
                spec,
                settings,
                home,
                identity,
                once=args.once,
                every_s=args.every * 3600 if args.every else None,
                args=args,
                claimables=claimables_of({spec.database} if dbs.separate else ROLES),
                dbs=dbs,
            )
            code = await runner.run()
            if runner.startup_error is not None:
                return fail(PROG, runner.startup_error, code)
            return code


async def _config_exists(spec: AgentSpec, dbs: Databases, config: str) -> None:
    """A per-config agent given a config that does not exist says so before it registers."""
    if spec.per_config and config != "all":
        from shared.psps import configs  # only the per-config agents need it

        await configs.load(dbs.ipptopsps, config)


async def _unless_asked(connecting: Awaitable[Databases], asked: asyncio.Event) -> Databases | None:
    """The databases, or None if a stop was asked for first (the connect may wait minutes
    for a server that is down; a stop must not)."""
    task = asyncio.ensure_future(connecting)
    waiter = asyncio.create_task(asked.wait(), name="stop-wait")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def _stopped_in_startup(log: Any, phase: str) -> int:
    """Log the clean end of a process stopped before it took any work."""
    sig = STOP.received.name if STOP.received else "?"
    log.info(
        "agent_stopped",
        reason=sig,
        phase=phase,
        exit_code=EXIT_OK,
        claims_handed_back=0,
        items_done=0,
        items_failed=0,
    )
    return EXIT_OK


def _edit_first(settings: Settings, args: argparse.Namespace) -> int | None:
    """``--config edit`` (seed 003): ask for a config and its fields, save it, then run with
    it; None to go on, else the exit code. Only on a terminal: under a supervisor there is
    nobody to answer. Ctrl-C leaves the config as it was."""
    if not sys.stdin.isatty():
        return fail(
            PROG, "--config edit asks questions: run it on a terminal, or give a config name", EXIT_USAGE
        )
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args.config = asyncio.run(_edit(settings))
    except KeyboardInterrupt:
        print()
        return fail(PROG, "interrupted: the config was not saved", 130)
    except IppError as exc:
        return fail(PROG, str(exc))
    finally:
        signal.signal(signal.SIGINT, previous)
    return None


async def _edit(settings: Settings) -> str:
    from shared.psps import configs  # only for --config edit

    async with opened(settings, IPPTOPSPS) as dbs:
        return await configs.edit(dbs.ipptopsps, None, ask_line, print)


#: Set by supervisord and systemd in what they start: they keep its stdout themselves.
SUPERVISED_BY = ("SUPERVISOR_ENABLED", "INVOCATION_ID")


def _log_file(args: argparse.Namespace, agent: str, settings: Settings) -> Path | None:
    """Seed 003's loader writes a log file "named with program, config, host and PID" by
    default: in ``--log-dir``, else in the ``log_dir`` setting unless a supervisor keeps the
    output (or the setting is empty)."""
    directory = args.log_dir
    if directory is None and not any(os.environ.get(v) for v in SUPERVISED_BY):
        directory = settings.log_dir
    if not directory:
        return None
    parts = [agent, args.config or "", socket.gethostname(), str(os.getpid())]
    name = "_".join(p for p in parts if p)
    return Path(directory) / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}.log"


def run_agent(argv: list[str]) -> int:
    """Parse ``argv``, load the agent and run it; the process's exit code."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    parser = _parser(settings)
    first, _ = parser.parse_known_args(argv)
    try:
        spec = load_agent(first.name, settings)
    except (UnknownAgent, SettingsError) as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    if spec.add_arguments:
        spec.add_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # `loader --config C init`: positionals anywhere
    if spec.per_config and not args.config:
        return fail(
            PROG,
            f"{spec.name} works on PSPS loading configs and was given none: --config NAME "
            "(ippctl psps config list), --config all for every active one, or --config edit "
            "to make one on this terminal",
            EXIT_USAGE,
        )
    if args.config == "edit":
        code = _edit_first(settings, args)
        if code is not None:
            return code
    log_file = _log_file(args, spec.name, settings)
    configure_logging(settings, also_to=log_file)
    bind(agent=spec.name, host=socket.gethostname(), pid=os.getpid(), config=args.config)
    if STOP.received is not None:
        return _stopped_in_startup(get_logger("runtime"), "start-up")
    try:
        return asyncio.run(_run(spec, settings, args))
    except IppError as exc:
        return fail(PROG, str(exc), EXIT_FAILED)
