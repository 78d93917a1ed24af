"""The deployment files: the real supervisord runs supervisord.conf; systemd verifies units."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.core.settings import parse_dsn
from shared.db.queries import Q
from tests.helpers import BIN, ROOT, agent_env, eventually

SUPERVISORD_CONF = ROOT / "supervisord.conf"
SYSTEMD = ROOT / "systemd"


def test_supervisord_stop_waits_longer_than_the_drain_deadline():
    from shared.core.settings import Settings

    conf = configparser.RawConfigParser()
    conf.read(SUPERVISORD_CONF)
    programs = [s for s in conf.sections() if s.startswith("program:")]
    assert programs
    for section in programs:
        assert int(conf[section]["stopwaitsecs"]) > Settings().drain_timeout_s
        assert conf[section]["stopasgroup"] == "true"
        assert conf[section]["stdout_logfile"].startswith("%(here)s/logs/")
        assert "stdout_logfile_backups" in conf[section]


async def test_supervisord_runs_the_agents_and_stops_them_cleanly(db, test_dsn, tmp_path):
    """supervisord starts every program of supervisord.conf; each registers a running
    client; `supervisorctl stop` ends them with their rows marked stopped."""
    home = tmp_path / "ipp"
    (home / "logs").mkdir(parents=True)
    (home / "var").mkdir()
    shutil.copy(SUPERVISORD_CONF, home / "supervisord.conf")
    # the PSPS stand-in keeps its tables in the (throw-away) test database
    env = {
        **agent_env(test_dsn),
        "IPP_PSPS_DB_NAME": parse_dsn(test_dsn).database,
        "IPP_VAR_DIR": str(home / "var"),
    }
    conf = str(home / "supervisord.conf")
    subprocess.run([str(BIN / "supervisord"), "-c", conf], env=env, cwd=home, check=True, timeout=30)
    try:

        async def running() -> list[dict[str, object]]:
            rows = await db.fetch_all(Q.list_clients, all=True)
            return [r for r in rows if r["agent"] == "sweeper" and r["status"] == "running"]

        (client,) = await eventually(running, timeout_s=30, what="sweeper client running")
        ctl = [str(BIN / "supervisorctl"), "-c", conf]

        def supervisor_says_running() -> bool:
            out = subprocess.run(
                [*ctl, "status"], env=env, capture_output=True, text=True, check=False, timeout=30
            ).stdout
            return "ipp:sweeper" in out and "RUNNING" in out

        await eventually(supervisor_says_running, timeout_s=30, what="supervisorctl RUNNING")
        stop = subprocess.run(
            [*ctl, "stop", "ipp:*"], env=env, capture_output=True, text=True, check=False, timeout=60
        )
        assert "stopped" in stop.stdout, stop.stdout + stop.stderr
        rows = await db.fetch_all(Q.list_clients, all=True)
        (row,) = [r for r in rows if r["client_id"] == client["client_id"]]
        assert row["status"] == "stopped"
        log = (home / "logs" / "sweeper.log").read_text()
        assert '"event": "agent_started"' in log and '"event": "agent_stopped"' in log
    finally:
        subprocess.run(
            [str(BIN / "supervisorctl"), "-c", conf, "shutdown"],
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path):
    """The template (instantiated for the sweeper) and the target verify cleanly; paths are
    pointed at this checkout because verify checks that ExecStart exists."""
    unit = (SYSTEMD / "ipp-agent@.service").read_text()
    unit = unit.replace("/opt/ipp/.venv/bin/ipp-agent", str(Path(sys.executable).parent / "ipp-agent"))
    unit = unit.replace("WorkingDirectory=/opt/ipp", f"WorkingDirectory={ROOT}")
    (tmp_path / "ipp-agent@sweeper.service").write_text(unit)
    shutil.copy(SYSTEMD / "ipp-agents.target", tmp_path / "ipp-agents.target")
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "ipp-agent@sweeper.service"),
            str(tmp_path / "ipp-agents.target"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "TimeoutStopSec=40" in unit and "Restart=on-failure" in unit
