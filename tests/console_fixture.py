"""The console fixture: a console agent on a free port of 127.0.0.1 with three users
(alice operator, vic viewer, ada admin), for test_console and test_console_browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from tests.helpers import AgentProcess, eventually, run_ippctl
from tests.mirror_fixture import free_port

PASSWORD = "correct horse"
CLIENT = Query("t_client", "SELECT status, command FROM clients WHERE client_id = %(id)s", "test")
AUDIT = Query(
    "t_audit", "SELECT user, action, ok, result, params, remote FROM console_audit ORDER BY audit_id", "test"
)
USERS = Query("t_users", "SELECT name, role, password_hash FROM console_user", "test")
CLEAN = [
    "DELETE FROM psps_batch WHERE config LIKE 'cons%%'",
    "DELETE FROM psps_item WHERE config LIKE 'cons%%'",
    "DELETE FROM psps_stripe WHERE config LIKE 'cons%%'",
    "DELETE FROM psps_config WHERE name LIKE 'cons%%'",
    "DELETE FROM console_session",
    "DELETE FROM console_user",
    "DELETE FROM console_audit",
    "DELETE FROM console_login_attempt",
]


ippctl = run_ippctl


@dataclass
class Console:
    url: str
    proc: AgentProcess


@pytest.fixture
async def console(db: Database, test_dsn: str, tmp_path: Any) -> AsyncIterator[Console]:
    for statement in CLEAN:
        await db.execute(Query("t_clean", statement, "test"))
    for name, role in (("alice", "operator"), ("vic", "viewer"), ("ada", "admin")):
        out = ippctl(
            test_dsn, "console", "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD
        )
        assert out.returncode == 0, out.stderr
    port = free_port()
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "cons_P2_2026_1202_101010.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    proc = AgentProcess(
        "console",
        test_dsn,
        tmp_path,
        console_port=port,
        var_dir=str(tmp_path / "var"),
        metrics_plot_dir=str(plots),
    )
    try:
        await eventually(lambda: proc.events("console_listening"), timeout_s=60, what="the console listening")
        yield Console(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.kill()
