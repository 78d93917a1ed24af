"""The DataStore over HTTP (DESIGN "HTTP", REFERENCE 6), as an aiohttp application.

- ``/ds/index.txt``: the products;
- ``/ds/<product>/index.txt``: its filesets; ``?<fileset>`` only those registered after it
  (an unknown one is 404, never the whole list);
- ``/ds/<product>/<fileset>/index.txt``: the files with bytes, md5 and type;
- ``/ds/<product>/<fileset>/<file>``: the file itself, with Range support.

Only files registered in dsFile are served, from their storage instance; a name that is not
registered is 404 whatever lies on disk. Everything is read from the database per request,
so what the listings show is what has been committed. With a token (``ds_token``) every
request must carry ``Authorization: Bearer <token>``, else 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from shared.core.errors import StorageError
from shared.core.log import get_logger
from shared.db.database import Database
from shared.distribution import datastore
from shared.distribution.datastore import NotFound
from shared.storage.store import Storage

DB_KEY: web.AppKey[Database] = web.AppKey("db", Database)
TEXT = "text/plain"
log = get_logger("datastore")


def _db(request: web.Request) -> Database:
    return request.app[DB_KEY]


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type=TEXT, charset="utf-8")


async def root(request: web.Request) -> web.Response:
    return _text(await datastore.root_listing(_db(request)))


async def product(request: web.Request) -> web.Response:
    after = request.query_string or None
    try:
        return _text(await datastore.product_listing(_db(request), request.match_info["product"], after))
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None


async def fileset(request: web.Request) -> web.Response:
    try:
        return _text(
            await datastore.fileset_listing(
                _db(request), request.match_info["product"], request.match_info["fileset"]
            )
        )
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None


async def file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    try:
        files = await datastore.fileset_files(
            _db(request), request.match_info["product"], request.match_info["fileset"]
        )
    except NotFound as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    row = next((f for f in files if f["file_name"] == name), None)
    if row is None:
        raise web.HTTPNotFound(text=f"fileset has no file {name!r}\n")
    if row["uri"] is None:  # registered by the IPP's dsreg, whose copy lies in its own tree
        log.warning("ds_file_unstored", file=name, fileset=request.match_info["fileset"])
        raise web.HTTPNotFound(text=f"{name}: registered without a stored copy at this site\n")
    try:
        path = await Storage(_db(request)).locate(row["uri"])
    except StorageError as exc:
        log.warning("ds_file_unavailable", file=name, error=str(exc))
        # the reason (paths, volumes) stays in the server's log; the client learns only this
        raise web.HTTPServiceUnavailable(text=f"{name}: not available now, try again later\n") from None
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _token_required(token: str) -> Middleware:
    """A middleware that answers 401 unless the request carries the bearer token."""
    wanted = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), wanted):
            log.warning("ds_unauthorized", client=request.remote, path=request.path[:120])
            raise web.HTTPUnauthorized(
                text="a DataStore token is required\n", headers={"WWW-Authenticate": "Bearer"}
            )
        return await handler(request)

    return check


def make_app(db: Database, token: str = "") -> web.Application:
    app = web.Application(middlewares=[_token_required(token)] if token else [])
    app[DB_KEY] = db
    app.router.add_get("/ds/index.txt", root)
    app.router.add_get("/ds/{product}/index.txt", product)
    app.router.add_get("/ds/{product}/{fileset}/index.txt", fileset)
    app.router.add_get("/ds/{product}/{fileset}/{file}", file)
    return app
