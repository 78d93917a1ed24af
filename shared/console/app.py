"""The console's web application (aiohttp, server-rendered Jinja2 pages): its routes, the
login, the overview with client control, and the audit page. Every page needs a session;
every write is a POST whose form carries the session's CSRF token, is checked against the
role on the server (viewers change nothing: 403), goes through the same functions as
ippctl, and is audited with its result. Errors are ippctl's own messages, on the page.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from shared.console import audit, loading, runs
from shared.console.auth import LoginLimiter, LoginLimits, Session, Sessions, authenticate, may
from shared.console.pages import (
    COOKIE,
    DB,
    DBS,
    HERE,
    LIMITER,
    LIMITS,
    LOG,
    SECURE,
    SESSIONS,
    SETTINGS,
    audit_write,
    do,
    pipelines_context,
    plots_in,
    remote,
    render,
    viewer,
    writer,
)  # fmt: skip
from shared.core.settings import Settings
from shared.db.columns import TextLimits
from shared.db.database import Database
from shared.db.roles import Databases
from shared.runtime import control
from shared.runtime.httpserver import security_headers


def make_app(
    db: Database,
    sessions: Sessions,
    limits: TextLimits,
    log: Any,
    settings: Settings,
    dbs: Databases | None = None,
) -> web.Application:
    app = web.Application(middlewares=[security_headers])
    app[DBS] = dbs or Databases.single(db)
    limiter = LoginLimiter(db, LoginLimits.from_settings(settings))
    app[DB], app[SESSIONS], app[LIMITER], app[LIMITS], app[LOG] = db, sessions, limiter, limits, log
    app[SECURE], app[SETTINGS] = settings.console_secure_cookie, settings
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.globals["age"] = control.heartbeat_age

    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", overview)
    app.router.add_get("/partials/clients", clients_partial)
    app.router.add_get("/partials/pipelines", pipelines_partial)
    app.router.add_post("/clients/{client_id}/{command}", client_command)
    app.router.add_post("/flags", standing_flag)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/plots/{name}", plot_file)
    loading.add_routes(app)
    runs.add_routes(app)
    app.router.add_static("/static", HERE / "static", show_index=False)
    return app


# -- logging in ------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("login.html", request, {"title": "Log in", "session": None})


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user, password = str(form.get("user", ""))[:64], str(form.get("password", ""))[:1024]
    address = remote(request) or "?"
    app = request.app
    refused = await app[LIMITER].admit(address, user)  # counted before the password is checked
    if refused is not None:
        await audit_write(request, None, "login", {"user": user}, False, f"refused: {refused}; wait a minute")
        return render(request, "login.html", None, f"{refused}; wait a minute", 429)
    role = await authenticate(app[DB], user, password)
    if role is None:
        await audit_write(request, None, "login", {"user": user}, False, "wrong user name or password")
        return render(request, "login.html", None, "wrong user name or password", 401)
    cookie, session = await app[SESSIONS].create(user, role, remote(request))
    await audit_write(request, session, "login", {"user": user}, True, f"logged in as {role}")
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", secure=app[SECURE], path="/",
        max_age=int(app[SESSIONS].hours * 3600),
    )  # fmt: skip
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    session = await writer(request, "viewer", "logout", {})
    await request.app[SESSIONS].end(request.cookies.get(COOKIE))
    await audit_write(request, session, "logout", {}, True, "logged out")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def _clients_context(request: web.Request, session: Session) -> dict[str, Any]:
    clients, flags = await control.clients_and_flags(request.app[DBS].homes())
    return {
        "clients": clients,
        "flags": flags,
        "csrf": session.csrf,
        "can_control": may(session.role, "operator"),
    }


async def overview_page(
    request: web.Request, session: Session, message: str = "", status: int = 200
) -> web.Response:
    context = {**await _clients_context(request, session), **await pipelines_context(request)}
    return render(request, "overview.html", session, message, status, **context)


async def overview(request: web.Request) -> web.StreamResponse:
    return await overview_page(request, await viewer(request))


async def clients_partial(request: web.Request) -> web.StreamResponse:
    session = await viewer(request)
    return aiohttp_jinja2.render_template("clients.html", request, await _clients_context(request, session))


async def pipelines_partial(request: web.Request) -> web.StreamResponse:
    await viewer(request)
    return aiohttp_jinja2.render_template("pipelines.html", request, await pipelines_context(request))


async def plot_file(request: web.Request) -> web.StreamResponse:
    """A plot by name: only the names listed in the plot directory (no paths)."""
    await viewer(request)
    name = request.match_info["name"]
    directory = request.app[SETTINGS].plot_dir()
    if name not in await asyncio.to_thread(plots_in, directory):
        raise web.HTTPNotFound(text="no such plot\n")
    return web.FileResponse(directory / name, headers={"Content-Type": "image/png"})


async def audit_page(request: web.Request) -> web.StreamResponse:
    session = await viewer(request)
    return render(request, "audit.html", session, audit=await audit.recent(request.app[DB]))


# -- control (the functions ippctl clients uses) ---------------------------------------------


async def client_command(request: web.Request) -> web.StreamResponse:
    client_id, command = request.match_info["client_id"], request.match_info["command"]
    params = {"client_id": client_id, "command": command}
    session = await writer(request, "operator", f"client_{command}", params)
    work = control.command_client_anywhere(request.app[DBS].homes(), client_id, command)
    return await do(request, session, f"client_{command}", params, work, overview_page)


async def standing_flag(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    command = str(form.get("command", ""))
    scope = control.Scope(
        _field(form, "agent", blank_is_all=True), _field(form, "host"), _field(form, "config")
    )
    params = {"agent": scope.agent or "all", "host": scope.host, "config": scope.config, "command": command}
    # A flag on every agent of every host and config stops or pauses the whole site: an admin's.
    site_wide = not (scope.agent or scope.host or scope.config)
    session = await writer(request, "admin" if site_wide else "operator", f"flag_{command}", params)
    work = control.command_scope_everywhere(
        request.app[DBS].homes(), scope, command, f"{session.user}@console"
    )
    return await do(request, session, f"flag_{command}", params, work, overview_page)


def _field(form: Any, name: str, *, blank_is_all: bool = False) -> str:
    value = str(form.get(name, "")).strip()[:64]
    return "" if blank_is_all and value == "all" else value
