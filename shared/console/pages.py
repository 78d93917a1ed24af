"""What every console page shares: the application's keys, the session of a request (a
viewer's, or a writer's with its CSRF token and role checked), the audit of a write, the
rendering, and :func:`do`, which runs a write and shows its result."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from shared.console import audit
from shared.console.auth import LoginLimiter, Session, Sessions, may
from shared.core.errors import IppError
from shared.core.settings import Settings
from shared.db.columns import TextLimits
from shared.db.database import Database
from shared.db.roles import Databases
from shared.observe import metrics

HERE = Path(__file__).resolve().parent
COOKIE = "ipp_console"
DB: web.AppKey[Database] = web.AppKey("db", Database)
#: Every database by role: the loading pages work on ``DBS.ipptopsps``.
DBS: web.AppKey[Databases] = web.AppKey("dbs", Databases)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
LIMITER: web.AppKey[LoginLimiter] = web.AppKey("limiter", LoginLimiter)
LIMITS: web.AppKey[TextLimits] = web.AppKey("limits", TextLimits)
LOG: web.AppKey[Any] = web.AppKey("log", object)
SECURE: web.AppKey[bool] = web.AppKey("secure", bool)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def session_of(request: web.Request) -> Session | None:
    return await request.app[SESSIONS].get(request.cookies.get(COOKIE))


async def viewer(request: web.Request) -> Session:
    """The request's session, or a redirect to the login page."""
    session = await session_of(request)
    if session is None:
        raise web.HTTPSeeOther("/login")
    return session


def remote(request: web.Request) -> str | None:
    return request.remote


async def writer(request: web.Request, role: str, action: str, params: dict[str, Any]) -> Session:
    """The session of a write: logged in, the form's CSRF token right, the role enough;
    a refusal is audited and answered 403."""
    session = await viewer(request)
    form = await request.post()
    if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
        await _audit(request, session, action, params, False, "refused: missing or wrong CSRF token")
        raise web.HTTPForbidden(text="refused: the form's CSRF token is missing or wrong; reload the page\n")
    if not may(session.role, role):
        await _audit(request, session, action, params, False, f"refused: {session.role} may not {action}")
        article = "an" if session.role[:1] in "aeiou" else "a"
        raise web.HTTPForbidden(text=f"refused: {article} {session.role} may not {action} (needs {role})\n")
    return session


async def audit_write(
    request: web.Request, session: Session | None, action: str, params: dict[str, Any], ok: bool, result: str
) -> None:
    """Audit one write (or a refusal) with its result."""
    await _audit(request, session, action, params, ok, result)


async def _audit(
    request: web.Request, session: Session | None, action: str, params: dict[str, Any], ok: bool, result: str
) -> None:
    await audit.record(
        request.app[DB],
        request.app[LIMITS],
        request.app[LOG],
        user=session.user if session else None,
        action=action,
        params=params,
        remote=remote(request),
        ok=ok,
        result=result,
    )


# -- pages ---------------------------------------------------------------------------------


def render(
    request: web.Request,
    template: str,
    session: Session | None,
    message: str = "",
    status: int = 200,
    **extra: Any,
) -> web.Response:
    context = {
        "title": template.split(".")[0],
        "session": session,
        "message": message,
        "ok": status < 400,
        **extra,
    }
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def plots_in(directory: Path) -> list[str]:
    """The newest density and progress plots the metrics agent drew (metrics_plot_dir)."""
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.glob("*.png") if not p.name.startswith("."))


async def pipelines_context(request: web.Request) -> dict[str, Any]:
    dbs = request.app[DBS]
    life = await metrics.lifecycle(dbs)
    reports = await metrics.config_reports(dbs.ipptopsps, "all")
    plots = await asyncio.to_thread(plots_in, request.app[SETTINGS].plot_dir())
    return {
        "plots": [p for p in plots if not p.startswith("lifecycle_")],
        "life": life,
        "run_states": sorted({s for counts in life.runs.values() for s in counts}),
        "loading": "\n".join(metrics.format_report(r) for r in reports) or "no loading configs",
    }


Page = Callable[[web.Request, Session, str, int], Awaitable[web.Response]]


async def do(
    request: web.Request,
    session: Session,
    action: str,
    params: dict[str, Any],
    work: Awaitable[str],
    page: Page,
) -> web.Response:
    """Run one write, audit it with its result, and show ``page`` with the
    message: ippctl's own text, or its error (400)."""
    show = page
    try:
        message = await work
    except IppError as exc:
        await _audit(request, session, action, params, False, str(exc))
        return await show(request, session, str(exc), 400)
    await _audit(request, session, action, params, True, message)
    return await show(request, session, message, 200)
