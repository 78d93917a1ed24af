"""The PSPS stand-in against a hostile DataStore and strangers: names that would lead out of
its directory are refused, and only its configured peers may delete a batch's copy."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from shared.core.settings import load_settings, parse_dsn
from shared.db.schema import drop_database
from shared.distribution import datastore
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import Mirror, free_port

PRODUCTS = ("../x", "good")


async def _index(request: web.Request) -> web.Response:
    parts = request.path.strip("/").split("/")
    if request.path == "/ds/index.txt":
        return web.Response(
            text=datastore.format_listing(
                datastore.PRODUCT_HEADER,
                [(p, "null", "2009-04-15T03:02:12Z", "psps", "hostile") for p in PRODUCTS],
            )
        )
    if parts[-1] == "index.txt":
        return web.Response(
            text=datastore.format_listing(
                ("filesetID", "time registered", "type"),
                [
                    ("../../escape", "2009-04-15T03:02:12Z", "psps"),
                    ("batch.ok.1", "2009-04-15T03:02:12Z", "psps"),
                ],
            )
        )
    return web.Response(status=404, text="no such file")


@pytest.fixture
async def hostile_ds() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _index)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


def _delete(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, method="DELETE")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_the_dxlayer_refuses_names_that_lead_out_and_strangers_cannot_delete(
    mirror: Mirror, hostile_ds: int, tmp_path: Path
) -> None:
    db_name = f"{parse_dsn(mirror.dsn).database}_psps"
    odm_port = free_port()
    dx_dir = tmp_path / "dx"
    sim = AgentProcess(
        "psps",
        mirror.dsn,
        tmp_path,
        module="sim",
        ds_port=hostile_ds,
        odm_port=odm_port,
        psps_db_name=db_name,
        dxlayer_poll_s=0.2,
        dxlayer_dir=str(dx_dir),
        odm_delete_peers="",
        odm_token="s3cret",
    )
    try:
        await eventually(
            lambda: sim.events("product_refused") and sim.events("batch_refused"),
            timeout_s=60,
            what="the hostile names refused",
        )
        assert sim.events("product_refused")[0]["product"] == "../x"
        assert {e["batch"] for e in sim.events("batch_refused")} == {"../../escape"}
        assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()
        url = f"http://127.0.0.1:{odm_port}/dxlayer/batch/batch.ok.1"
        assert _delete(url, None) == 403
        assert _delete(url, "wrong") == 403
        assert _delete(url, "s3cret") in (200, 404)  # a peer: let through to the batch
        assert sim.events("delete_refused")
    finally:
        if sim.proc.poll() is None:
            sim.send(signal.SIGTERM)
            await sim.wait(timeout_s=30)
        await drop_database(
            load_settings(environ={}, db_dsn=mirror.dsn), parse_dsn(mirror.dsn).with_database(db_name)
        )
