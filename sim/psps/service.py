"""``ipp-sim psps``: the PSPS stand-in as one supervised program.

It creates its database and tables when missing, serves the ODM on ``odm_host:odm_port`` and
runs the DXLayer's polling task beside it. SIGTERM/SIGINT only request a stop: the current
step finishes, the web server closes, the program exits 0. A DXLayer task that dies stops the
program with exit 1, loudly, so the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from shared.core.cli import EXIT_FAILED, EXIT_USAGE, fail
from shared.core.errors import IppError, SettingsError
from shared.core.log import bind, configure_logging, get_logger
from shared.core.settings import Settings, load_settings, parse_dsn
from shared.db.database import Database
from shared.db.schema import Migration, apply_statements, create_database
from shared.distribution import client as dsclient
from shared.runtime.httpserver import ServerLimits, serving
from shared.runtime.stopsignals import STOP
from sim.psps import odm
from sim.psps.dxlayer import DxLayer
from sim.psps.tables import all_tables
from sim.settings import StandIns, load_stand_ins

SCHEMA = Path(__file__).resolve().parent.parent / "sql" / "psps_schema.sql"
PROG = "ipp-sim"
log = get_logger("psps_sim")


async def open_database(settings: Settings) -> Database:
    """The stand-in's database with its tables, created when missing."""
    dsn = parse_dsn(settings.psps_effective_dsn())
    if await create_database(settings, dsn):
        log.info("psps_database_created", database=dsn.database)
    db = await Database.connect(settings, dsn, local_infile=True)
    try:
        statements = Migration(0, "psps", SCHEMA).statements()
        for t in all_tables():
            statements += [t.create, t.create_stage]
        await apply_statements(db, statements, name="psps")
    except BaseException:
        await db.close()
        raise
    return db


async def serve(settings: Settings, knobs: StandIns, stop: asyncio.Event) -> int:
    db = await open_database(settings)
    try:
        async with serving(
            odm.make_app(db, settings, knobs),
            settings.odm_host,
            settings.odm_port,
            ServerLimits.from_settings(settings),
            log,
            "odm",
        ):
            return await _run(db, settings, knobs, stop)
    finally:
        await db.close()


async def _run(db: Database, settings: Settings, knobs: StandIns, stop: asyncio.Event) -> int:
    """The DXLayer's passes until a stop is asked for (the ODM answers meanwhile)."""
    log.info(
        "odm_listening",
        url=f"http://{settings.odm_host}:{settings.odm_port}/odm/",
        datastore=f"http://{settings.ds_host}:{settings.ds_port}/ds/",
    )
    async with dsclient.session(dsclient.Limits.from_settings(settings)) as session:
        dx = asyncio.create_task(DxLayer(db, settings, knobs, session).run(stop), name="dxlayer")
        stopping = asyncio.create_task(stop.wait(), name="stop_requested")
        done, _ = await asyncio.wait({dx, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if dx in done and not stop.is_set():  # it ended by itself: an error, or a bug
            stopping.cancel()
            log.error("dxlayer_died", error=repr(dx.exception()))
            return 1
        stopping.cancel()  # a stop was asked for; the DXLayer may have seen it first
        await dx  # it sees the stop between steps
    log.info("psps_sim_stopped")
    return 0


async def main_async(settings: Settings, knobs: StandIns) -> int:
    stop = asyncio.Event()
    with STOP.delivered_by(asyncio.get_running_loop()), STOP.listening(lambda _: stop.set()):
        return await serve(settings, knobs, stop)


def run_stand_in(command: str) -> int:
    """``ipp-sim psps``: settings, logging, then the stand-in until a stop request."""
    try:
        settings = load_settings()
        knobs = load_stand_ins()
    except SettingsError as exc:
        return fail(PROG, str(exc), EXIT_USAGE)
    configure_logging(settings)
    bind(agent=f"sim_{command}", host=socket.gethostname(), pid=os.getpid())
    if STOP.received is not None:
        log.info("psps_sim_stopped", reason=STOP.received.name, phase="start-up")
        return 0
    try:
        return asyncio.run(main_async(settings, knobs))
    except IppError as exc:
        log.error("psps_sim_failed", error=str(exc))
        return fail(PROG, str(exc), EXIT_FAILED)
