"""The console's runs and storage page: runs per stage and state; set-state with the
transition rules and texts of ``ippctl runs set-state``; request-update with what it changes
shown before confirming; volumes up/down/lost; the storage audit; distribution targets,
sources and failed filesets with retry. Every write is the function ippctl calls."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared.console import pages as console
from shared.console.auth import Session, may
from shared.core.errors import IppError
from shared.db.queries import Q
from shared.distribution import mirror
from shared.processing import runs
from shared.processing.stages import OPERATOR_TARGETS, STAGES
from shared.storage.store import VOLUME_STATES, Storage

LIFECYCLE = tuple(name for name, s in STAGES.items() if s.lifecycle)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/runs", runs_page)
    app.router.add_post("/runs/set-state", set_state)
    app.router.add_post("/runs/update-preview", update_preview)
    app.router.add_post("/runs/update", request_update)
    app.router.add_post("/storage/volume", volume_state)
    app.router.add_post("/storage/audit", storage_audit)
    app.router.add_post("/dist/retry", dist_retry)


async def _page(
    request: web.Request, session: Session, message: str = "", status: int = 200, **extra: Any
) -> web.Response:
    db = request.app[console.DB]
    context = await console.pipelines_context(request)
    return console.render(
        request,
        "runs.html",
        session,
        message,
        status,
        **context,
        stages=LIFECYCLE,
        targets_allowed=OPERATOR_TARGETS,
        volumes=await Storage(db).volumes(),
        volume_states=VOLUME_STATES,
        targets=await db.fetch_all(Q.dist_targets),
        waiting_destreak=await db.fetch_all(Q.dist_waiting_destreak),
        sources=await db.fetch_all(Q.rc_sources),
        failed=await db.fetch_all(Q.rc_failed, source=None, limit=200),
        csrf=session.csrf,
        can_control=may(session.role, "operator"),
        can_admin=may(session.role, "admin"),
        **extra,
    )


async def runs_page(request: web.Request) -> web.StreamResponse:
    return await _page(request, await console.viewer(request))


def _run(form: Any) -> tuple[str, int]:
    stage_name = str(form.get("stage", ""))
    try:
        return stage_name, int(str(form.get("id", "")))
    except ValueError:
        raise IppError(f"run id {str(form.get('id', ''))[:20]!r} is not a number") from None


async def set_state(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    params = {k: str(form.get(k, ""))[:64] for k in ("stage", "id", "state")}
    session = await console.writer(request, "operator", "runs_set_state", params)

    async def work() -> str:
        stage_name, run_id = _run(form)
        changes = await runs.set_state(request.app[console.DB], stage_name, params["state"], run_id=run_id)
        return "; ".join(c.describe(stage_name) for c in changes) or "nothing changed"

    return await console.do(request, session, "runs_set_state", params, work(), _page)


async def update_preview(request: web.Request) -> web.StreamResponse:
    """What a request-update would change (a dry run of the same transition), to confirm."""
    form = await request.post()
    params = {k: str(form.get(k, ""))[:64] for k in ("stage", "id")}
    session = await console.writer(request, "operator", "runs_update_preview", params)
    try:
        stage_name, run_id = _run(form)
        changes = await runs.set_state(
            request.app[console.DB], stage_name, "update", run_id=run_id, dry_run=True
        )
    except IppError as exc:
        return await _page(request, session, str(exc), 400)
    lines = [f"would set {c.describe(stage_name)}" for c in changes]
    return await _page(request, session, preview=lines, preview_stage=stage_name, preview_id=run_id)


async def request_update(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    params = {k: str(form.get(k, ""))[:64] for k in ("stage", "id")}
    session = await console.writer(request, "operator", "runs_request_update", params)

    async def work() -> str:
        stage_name, run_id = _run(form)
        change = await runs.request_update(request.app[console.DB], stage_name, run_id)
        return f"{stage_name} {run_id}: {change.was} -> update requested"

    return await console.do(request, session, "runs_request_update", params, work(), _page)


async def volume_state(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    params = {k: str(form.get(k, ""))[:64] for k in ("name", "state")}
    # A volume's state decides where every agent reads and writes: an admin's.
    session = await console.writer(request, "admin", "volume_state", params)

    async def work() -> str:
        await Storage(request.app[console.DB]).set_volume_state(params["name"], params["state"])
        return f"volume {params['name']} is now {params['state']}"

    return await console.do(request, session, "volume_state", params, work(), _page)


async def storage_audit(request: web.Request) -> web.StreamResponse:
    session = await console.writer(request, "operator", "storage_audit", {})

    async def work() -> str:
        report = await Storage(request.app[console.DB]).audit()
        return (
            f"{report.files} files on volumes that are up; registered but missing: {len(report.missing)}; "
            f"on disk but not registered: {len(report.orphans)}; temporaries: {len(report.temporaries)}; "
            f"objects without any instance: {len(report.empty_objects)}"
        )

    return await console.do(request, session, "storage_audit", {}, work(), _page)


async def dist_retry(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    params = {k: str(form.get(k, ""))[:128] for k in ("name", "source")}
    session = await console.writer(request, "operator", "dist_retry", params)
    work = mirror.retry_failed(request.app[console.DB], params["name"], params["source"] or None)
    return await console.do(request, session, "dist_retry", params, work, _page)
