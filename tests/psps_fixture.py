"""The PSPS side for tests: the site's DataStore (dist_server) and the stand-in (``ipp-sim
psps``) on free ports, with a psps database of their own that is dropped afterwards."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database
from shared.db.schema import drop_database
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port
from tests.survey_fixture import SurveySite


@dataclass
class PspsSide:
    site: SurveySite
    log_dir: Path
    settings: dict[str, Any]
    sim: AgentProcess | None = None
    server: AgentProcess | None = None
    extra: list[AgentProcess] = field(default_factory=list)

    @property
    def odm(self) -> str:
        return f"http://127.0.0.1:{self.settings['odm_port']}"

    def agent(self, name: str, *args: str, **settings: Any) -> AgentProcess:
        """An agent of the site with the PSPS side's ports."""
        proc = AgentProcess(
            name,
            self.site.dsn,
            self.log_dir,
            *args,
            var_dir=str(self.site.var_dir),
            **{**self.settings, **settings},
        )
        self.extra.append(proc)
        return proc

    async def run_once(self, name: str, *args: str, **settings: Any) -> AgentProcess:
        proc = self.agent(name, "--once", *args, **settings)
        assert await proc.wait(timeout_s=120) == 0, proc.output()
        return proc

    def start_sim(self, **knobs: Any) -> AgentProcess:
        self.sim = AgentProcess(
            "psps",
            self.site.dsn,
            self.log_dir,
            module="sim",
            var_dir=str(self.site.var_dir),
            **{**self.settings, **knobs},
        )
        return self.sim

    async def stop_sim(self) -> None:
        if self.sim is not None and self.sim.proc.poll() is None:
            self.sim.send(signal.SIGTERM)
            assert await self.sim.wait(timeout_s=30) == 0, self.sim.output()

    async def psps_db(self) -> Database:
        dsn = parse_dsn(self.site.dsn).with_database(self.settings["psps_db_name"])
        return await Database.connect(self.site.settings, dsn)

    async def odm_up(self) -> None:
        def answers() -> bool:
            if self.sim is not None and self.sim.proc.poll() is not None:
                raise AssertionError(
                    f"the stand-in exited with {self.sim.proc.returncode}:\n{self.sim.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.odm}/odm/summary", timeout=15) as r:
                    return bool(r.status == 200)
            except urllib.error.HTTPError:  # it answers (the error knob may say 500)
                return True
            except OSError:
                return False

        await eventually(answers, timeout_s=60, what="the ODM stand-in to answer")


@asynccontextmanager
async def psps_side(site: SurveySite, log_dir: Path, **knobs: Any) -> AsyncIterator[PspsSide]:
    """dist_server serving the site's DataStore and the PSPS stand-in polling it."""
    db_name = f"{parse_dsn(site.dsn).database}_psps"
    settings = {
        "ds_port": free_port(),
        "odm_port": free_port(),
        "psps_db_name": db_name,
        "dxlayer_poll_s": 0.2,
        "dxlayer_dir": str(site.var_dir / "dxlayer"),
    }
    side = PspsSide(site, log_dir, settings)
    side.server = side.agent("dist_server")
    side.start_sim(**knobs)
    try:
        await side.odm_up()
        yield side
    finally:
        for proc in [*side.extra, side.sim]:
            if proc is not None:
                proc.kill()
        await drop_database(
            load_settings(environ={}, db_dsn=site.dsn), parse_dsn(site.dsn).with_database(db_name)
        )
