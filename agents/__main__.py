"""``ipp-agent NAME [--config CONFIG|all] [--once]``: run one agent under the runtime."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys

from agents import agent_modules, load_agent
from shared.cli import EXIT_FAILED, EXIT_USAGE, fail
from shared.db import Database
from shared.errors import IppError, SettingsError, UnknownAgent
from shared.log import bind, configure_logging, get_logger
from shared.runtime.agent import AgentRunner, AgentSpec
from shared.runtime.clients import ClientIdentity
from shared.schema import check_schema
from shared.settings import Settings, load_settings

PROG = "ipp-agent"


def _parser(settings: Settings | None) -> argparse.ArgumentParser:
    known = ", ".join(sorted(agent_modules(settings))) if settings else "see the docs"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Run one IPP agent under the shared runtime. Agents: {known}.",
    )
    parser.add_argument("name", help="the agent to run")
    parser.add_argument("--config", default="",
                        help="the configuration this agent works on (a name, or 'all')")
    parser.add_argument("--once", action="store_true",
                        help="process what is pending, then exit")
    return parser


async def _run(spec: AgentSpec, settings: Settings, args: argparse.Namespace) -> int:
    log = get_logger("runtime")
    try:
        db = await Database.connect(settings)
    except IppError as exc:
        log.error("startup_failed", error=str(exc))
        return fail(PROG, str(exc))
    try:
        try:
            await check_schema(db)
        except IppError as exc:
            log.error("startup_failed", error=str(exc))
            return fail(PROG, str(exc))
        identity = ClientIdentity.fresh(spec.name, args.config)
        runner = AgentRunner(spec, settings, db, identity, once=args.once, args=args)
        return await runner.run()
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    args = parser.parse_args(argv)
    configure_logging(settings)
    bind(agent=spec.name, host=socket.gethostname(), pid=os.getpid(), config=args.config)
    try:
        return asyncio.run(_run(spec, settings, args))
    except IppError as exc:
        return fail(PROG, str(exc), EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
