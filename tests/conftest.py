"""Fixtures: every test session gets its own database on a real MariaDB server.

The server is ``IPP_TEST_DSN`` when set, otherwise the private local server under ``var/``
(started here if needed, exactly as ``ippctl db start-local`` does).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from shared.core.settings import PROJECT_ROOT, Settings, load_settings, parse_dsn
from shared.db.database import Database
from shared.db.localdb import LocalMariaDB
from shared.db.queries import Query
from shared.db.schema import create_database, drop_database, upgrade
from sim import workload
from tests.console_fixture import console  # noqa: F401 - the console fixture, for its tests
from tests.helpers import FAST, AgentProcess
from tests.mirror_fixture import Mirror, make_mirror
from tests.survey_fixture import SurveySite, drop_templates

# CI runs the same examples every time; local runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

CLEAN = [
    "DELETE FROM sim_work_log",
    "DELETE FROM sim_work",
    "DELETE FROM agent_control",
    "DELETE FROM clients",
    "DELETE FROM storage_instance",
    "DELETE FROM storage_object",
    "DELETE FROM storage_volume",
]


def _project_files() -> set[str]:
    """What is in the project's var/ and logs/ beside the test server's own directory."""
    found = set()
    for top in (PROJECT_ROOT / "var", PROJECT_ROOT / "logs"):
        if top.is_dir():
            found |= {
                str(p.relative_to(PROJECT_ROOT))
                for p in top.rglob("*")
                if p.is_file() and "mariadb" not in p.relative_to(top).parts[:1]
            }
    return found


@pytest.fixture(scope="session", autouse=True)
def project_dirs_untouched() -> Iterator[None]:
    """Tests write only under their own temporary directories: a fresh clone after `make
    test` had test configs' plots in the project's var/plots (issue 31)."""
    before = _project_files()
    yield
    made = sorted(_project_files() - before)
    assert made == [], f"tests wrote into the project's own directories: {made[:10]}"


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """A DSN of the server the tests use (its database part is replaced per session)."""
    dsn = os.environ.get("IPP_TEST_DSN")
    if dsn:
        return dsn
    local = LocalMariaDB(PROJECT_ROOT / "var" / "mariadb")
    local.start()
    return local.dsn("ipp_test")


@pytest.fixture(scope="session")
async def test_dsn(server_dsn: str) -> AsyncIterator[str]:
    """This session's own database, at the current schema, with the workload tables."""
    name = f"ipp_test_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = parse_dsn(server_dsn).with_database(name)
    settings = load_settings(environ={}, db_dsn=dsn.url(), **FAST)
    await create_database(settings, dsn)
    db = await Database.connect(settings, dsn)
    try:
        await upgrade(db)
        await workload.create_tables(db)
    finally:
        await db.close()
    yield dsn.url()
    await drop_templates()
    await drop_database(settings, dsn)


@pytest.fixture
def settings(test_dsn: str) -> Settings:
    return load_settings(environ={}, db_dsn=test_dsn, **FAST)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """A connection pool to a freshly emptied session database."""
    database = await Database.connect(settings, pool_size=8)
    for statement in CLEAN:
        await database.execute(Query("clean", statement, "conftest"))
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def agents(test_dsn: str, tmp_path: Path) -> Iterator[list[AgentProcess]]:
    """Start agent processes with ``agents.append(AgentProcess(...))``; killed at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


@pytest.fixture
def spawn(test_dsn: str, tmp_path: Path, agents: list[AgentProcess]) -> Callable[..., AgentProcess]:
    """``spawn("workload", "--once", heartbeat_interval_s=1)`` starts an agent process."""

    def start(name: str, *args: str, **overrides: Any) -> AgentProcess:
        agent = AgentProcess(name, test_dsn, tmp_path, *args, **overrides)
        agents.append(agent)
        return agent

    return start


@pytest.fixture
async def mirror(test_dsn: str, tmp_path: Path) -> AsyncIterator[Mirror]:
    """A second site (a distribution mirror) in its own database."""
    async for site in make_mirror(test_dsn, tmp_path / "mirror"):
        yield site


@pytest.fixture
async def sdb(site: SurveySite) -> AsyncIterator[Database]:
    """A connection to the test module's survey site (its ``site`` fixture)."""
    db = await Database.connect(site.settings, pool_size=4)
    yield db
    await db.close()
