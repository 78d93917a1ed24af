"""The console's loading pages: configs (list, create, edit with the fields, types, defaults
and checks of ``ippctl psps config edit``; activate; queue now; the IN batch; requeue the
failed items) and a config's batches (their eight life-cycle states, filters, remove from
the DataStore and purge over a range). Every write is one of the functions ippctl uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from shared.console import pages as console
from shared.console.auth import Session, may
from shared.db.queries import Q
from shared.observe.metrics import BATCH_STAGES, OUTCOMES
from shared.psps import BATCH_TYPES, configs, operations, publish, queue
from shared.psps.configs import ConfigError


def add_routes(app: web.Application) -> None:
    app.router.add_get("/loading", config_list)
    app.router.add_get("/loading/new", config_new)
    app.router.add_get("/loading/{name}", config_form)
    app.router.add_post("/loading/{name}", config_save)
    app.router.add_post("/loading/{name}/{action}", config_action)
    app.router.add_get("/batches/{name}", batch_list)
    app.router.add_post("/batches/{name}/{action}", batch_action)


# -- configs -------------------------------------------------------------------------------


async def _list_page(
    request: web.Request, session: Session, message: str = "", status: int = 200
) -> web.Response:
    rows = await request.app[console.DBS].ipptopsps.fetch_all(Q.psps_configs)
    listed = [{"name": r["name"], **configs.from_row(r)} for r in rows]
    return console.render(
        request,
        "loading.html",
        session,
        message,
        status,
        configs=listed,
        csrf=session.csrf,
        can_control=may(session.role, "operator"),
    )


async def config_list(request: web.Request) -> web.StreamResponse:
    return await _list_page(request, await console.viewer(request))


async def _form(
    request: web.Request,
    session: Session,
    name: str,
    values: dict[str, Any],
    exists: bool,
    message: str = "",
    status: int = 200,
) -> web.Response:
    types = {
        str(r["name"]): str(r["sqltype"])
        for r in await request.app[console.DBS].ipptopsps.fetch_all(Q.psps_config_types)
    }
    fields = [
        {"name": f.name, "sqltype": types.get(f.name, "?"), "value": values[f.name], "help": f.help}
        for f in configs.FIELDS
    ]
    return console.render(
        request,
        "config.html",
        session,
        message,
        status,
        name=name,
        fields=fields,
        exists=exists,
        csrf=session.csrf,
        can_control=may(session.role, "operator"),
    )


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    return {k: configs.show(v) for k, v in values.items()}


async def config_new(request: web.Request) -> web.StreamResponse:
    session = await console.viewer(request)
    name = request.query.get("name", "").strip()
    try:
        configs.check_name(name)
    except ConfigError as exc:
        return await _list_page(request, session, str(exc), 400)
    current = await configs.get(request.app[console.DBS].ipptopsps, name)
    if current is not None:
        raise web.HTTPSeeOther(f"/loading/{name}")
    return await _form(request, session, name, _shown(configs.defaults(name)), exists=False)


async def config_form(request: web.Request) -> web.StreamResponse:
    session = await console.viewer(request)
    name = request.match_info["name"]
    current = await configs.get(request.app[console.DBS].ipptopsps, name)
    if current is None:
        return await _list_page(
            request, session, f"no loading config {name!r} (ippctl psps config list)", 404
        )
    return await _form(request, session, name, _shown(current), exists=True)


async def config_save(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    form = await request.post()
    given = {f.name: str(form.get(f.name, "")) for f in configs.FIELDS if f.name in form}
    session = await console.writer(request, "operator", "config_save", {"config": name, **given})
    db = request.app[console.DBS].ipptopsps
    exists = await configs.get(db, name) is not None
    try:
        await configs.set_fields(db, name, given)
    except ConfigError as exc:
        await console.audit_write(request, session, "config_save", {"config": name, **given}, False, str(exc))
        return await _form(request, session, name, given, exists, str(exc), 400)
    message = f"config {name} saved"
    await console.audit_write(request, session, "config_save", {"config": name, **given}, True, message)
    return await _list_page(request, session, message)


async def config_action(request: web.Request) -> web.StreamResponse:
    name, action = request.match_info["name"], request.match_info["action"]
    form = await request.post()
    params = {"config": name, **({"active": str(form.get("active", ""))} if action == "active" else {})}
    session = await console.writer(request, "operator", f"config_{action}", params)
    dbs, settings = request.app[console.DBS], request.app[console.SETTINGS]
    db = dbs.ipptopsps

    async def work() -> str:
        cfg = await configs.load(db, name)  # an unknown config is refused before anything is done
        if action == "active":
            active = params["active"] == "1"
            await configs.set_fields(db, name, {"active": "1" if active else "0"})
            return f"config {name} {'activated' if active else 'deactivated'}"
        if action == "queue":
            return await queue.queue_and_say(dbs, name, settings.psps_max_attempts)
        if action == "init":
            return (await publish.in_batch(dbs, cfg, Path(settings.var_dir))).describe(cfg)
        if action == "requeue":
            return (await operations.requeue_failed(db, name)).text
        raise ConfigError(f"unknown action {action!r}")

    return await console.do(request, session, f"config_{action}", params, work(), _list_page)


# -- batches -------------------------------------------------------------------------------


async def _batches_page(
    request: web.Request, session: Session, message: str = "", status: int = 200
) -> web.Response:
    name = request.match_info["name"]
    db = request.app[console.DBS].ipptopsps
    kind = request.query.get("type") or None
    stage, outcome = request.query.get("stage", ""), request.query.get("outcome", "")
    rows = await db.fetch_all(Q.psps_batches, config=name, type=kind if kind in BATCH_TYPES else None)
    if stage in BATCH_STAGES and outcome in OUTCOMES:
        rows = [r for r in rows if r[stage] == outcome]
    elif outcome in OUTCOMES:
        rows = [r for r in rows if any(r[s] == outcome for s in BATCH_STAGES)]
    return console.render(
        request,
        "batches.html",
        session,
        message,
        status,
        config=name,
        batches=rows,
        types=BATCH_TYPES,
        stages=BATCH_STAGES,
        outcomes=OUTCOMES,
        type=kind or "",
        stage=stage,
        outcome=outcome,
        csrf=session.csrf,
        can_control=may(session.role, "operator"),
    )


async def batch_list(request: web.Request) -> web.StreamResponse:
    session = await console.viewer(request)
    if await configs.get(request.app[console.DBS].ipptopsps, request.match_info["name"]) is None:
        return await _list_page(request, session, f"no loading config {request.match_info['name']!r}", 404)
    return await _batches_page(request, session)


async def batch_action(request: web.Request) -> web.StreamResponse:
    name, action = request.match_info["name"], request.match_info["action"]
    form = await request.post()
    first, last = str(form.get("first", "")).strip(), str(form.get("last", "")).strip() or None
    params = {"config": name, "first": first, "last": last or first}
    session = await console.writer(request, "operator", f"batches_{action}", params)
    dbs = request.app[console.DBS]
    db = dbs.ipptopsps

    async def work() -> str:
        if action == "remove":
            outcome = await operations.remove_batches(dbs, name, first, last)
        elif action == "purge":
            outcome = await operations.purge_batches(db, name, first, last)
        else:
            raise ConfigError(f"unknown action {action!r}")
        if not outcome.ok:
            raise ConfigError(outcome.text)
        return outcome.text

    return await console.do(request, session, f"batches_{action}", params, work(), _batches_page)
