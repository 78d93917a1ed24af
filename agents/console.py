"""Console: the operators' web console (seed 003's console.py), for as long as it runs.

It serves the pages on ``console_host:console_port`` (127.0.0.1:8084 by default: an operator
reaches it through an SSH tunnel; bound elsewhere, it says at start that it should sit
behind TLS). Each pass it forgets expired sessions; the pages do the rest, through the same
operations as ippctl, each write audited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.console import app as console_app
from shared.console.auth import Sessions, console_key
from shared.db.queries import Q
from shared.runtime.agent import AgentContext
from shared.runtime.httpserver import ServerLimits, serving

NAME = "console"
#: Its loading pages work on the ippToPsps database too (shared.db.roles).
OPENS_IPPTOPSPS = True
LOOPBACK = ("127.0.0.1", "::1", "localhost")


async def run_once(ctx: AgentContext) -> int:
    """Forget expired sessions; nothing else is pending (the pages are served meanwhile)."""
    gone = await ctx.db.execute(Q.console_sessions_expired)
    if gone:
        ctx.log.info("console_sessions_expired", sessions=gone)
    return 0


@asynccontextmanager
async def lifespan(ctx: AgentContext) -> AsyncIterator[None]:
    s = ctx.settings
    sessions = Sessions(ctx.db, await console_key(ctx.db), s.console_session_hours)
    app = console_app.make_app(ctx.db, sessions, ctx.text, ctx.log, s, ctx.dbs)
    async with serving(
        app, s.console_host, s.console_port, ServerLimits.from_settings(s), ctx.log, "console"
    ):
        ctx.log.info("console_listening", url=f"http://{s.console_host}:{s.console_port}/")
        if s.console_host not in LOOPBACK:
            ctx.log.warning(
                "console_unprotected",
                host=s.console_host,
                advice="the console should sit behind a TLS proxy (and console_secure_cookie set)",
            )
        yield
