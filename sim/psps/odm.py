"""The stand-in ODM web service: what PSPS says about a batch, and the DXLayer's copies.

``GET /odm/batch/<name>`` answers ``{"batch", "status", "type", "detections", "stage",
"reason", ...}`` with status loaded, merge_worthy, merged or failed (``stage`` says where a
failed batch failed), or 404 for a batch the ODM does not know (yet). ``DELETE
/dxlayer/batch/<name>`` deletes the DXLayer's copy, for the configured peers only
(``odm_delete_peers`` by address, or ``odm_token`` as a bearer token): 403 for anyone else.
``GET /odm/summary`` counts batches by status. Test knobs: ``odm_slow_s`` delays every
answer, ``odm_error_share`` answers that share of requests with HTTP 500.
"""

from __future__ import annotations

import asyncio
import hmac
import random
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from shared.core.log import get_logger
from shared.core.settings import Settings
from shared.db.database import Database
from sim.psps.dxlayer import P, delete_copy
from sim.settings import StandIns

log = get_logger("odm")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")
DB_KEY: web.AppKey[Database] = web.AppKey("db", Database)
SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)
KNOBS_KEY: web.AppKey[StandIns] = web.AppKey("knobs", StandIns)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


@web.middleware
async def knobs(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The test knobs: a slow ODM, and one that sometimes fails."""
    knob = request.app[KNOBS_KEY]
    if knob.odm_slow_s:
        await asyncio.sleep(knob.odm_slow_s)
    if knob.odm_error_share and random.random() < knob.odm_error_share:
        return web.json_response({"error": "internal error (odm_error_share knob)"}, status=500)
    return await handler(request)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME.match(name):
        raise web.HTTPBadRequest(text=f"not a batch name: {name[:80]!r}\n")
    return name


async def batch_status(request: web.Request) -> web.Response:
    name = _name(request)
    row = await request.app[DB_KEY].fetch_one(P.dx_batch_get, name=name)
    if row is None or row["status"] == "new":
        return web.json_response({"batch": name, "error": "unknown batch"}, status=404)
    body: dict[str, Any] = {
        "batch": name,
        "status": row["status"],
        "type": row["type"],
        "detections": int(row["detections"]),
        "stage": row["failed_stage"],
        "reason": row["reason"],
        "product": row["product"],
        "copy_deleted": bool(row["copy_deleted"]),
        "loaded_at": _when(row["loaded_at"]),
        "merge_worthy_at": _when(row["merge_worthy_at"]),
        "merged_at": _when(row["merged_at"]),
        "failed_at": _when(row["failed_at"]),
    }
    return web.json_response(body)


def _may_delete(request: web.Request) -> bool:
    """A configured peer (by address), or a client with the configured token."""
    peers = {p.strip() for p in request.app[KNOBS_KEY].odm_delete_peers.split(",") if p.strip()}
    if request.remote in peers:
        return True
    token = request.app[SETTINGS_KEY].odm_token
    sent = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


async def delete_batch(request: web.Request) -> web.Response:
    if not _may_delete(request):
        log.warning("delete_refused", client=request.remote, path=request.path[:120])
        return web.json_response({"error": "only the PSPS side's own peers may delete"}, status=403)
    name = _name(request)
    root = request.app[KNOBS_KEY].dxlayer_path(request.app[SETTINGS_KEY])
    found = await delete_copy(request.app[DB_KEY], root, name)
    if not found:
        return web.json_response({"batch": name, "error": "unknown batch"}, status=404)
    return web.json_response({"batch": name, "deleted": True})


async def summary(request: web.Request) -> web.Response:
    rows = await request.app[DB_KEY].fetch_all(P.dx_summary)
    return web.json_response(
        {r["status"]: {"batches": int(r["n"]), "detections": int(r["detections"] or 0)} for r in rows}
    )


def make_app(db: Database, settings: Settings, stand_ins: StandIns) -> web.Application:
    app = web.Application(middlewares=[knobs])
    app[DB_KEY] = db
    app[KNOBS_KEY] = stand_ins
    app[SETTINGS_KEY] = settings
    app.router.add_get("/odm/batch/{name}", batch_status)
    app.router.add_delete("/dxlayer/batch/{name}", delete_batch)
    app.router.add_get("/odm/summary", summary)
    return app
