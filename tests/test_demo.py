"""The whole system: ``ippctl demo`` as a user runs it (live screen, Ctrl-C), then
``ippctl demo --until-done --faults`` on that state, walking the survey through its life while
agents are SIGKILLed, the ODM fails batches and a volume goes down (every check must hold),
``--until-done`` once more on what that left, and ``--reset``.

The default suite runs a short campaign against the test server; ``make test-faults`` runs
the full one (at least 20 kills and a database restart) on a private server of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shared.core.settings import load_settings, parse_dsn
from shared.ctl import demo
from shared.db.schema import database_exists, drop_database
from tests.helpers import BIN, ROOT, eventually
from tests.mirror_fixture import free_port

QUICK = {
    "IPP_POLL_INTERVAL_S": "0.5",
    "IPP_HEARTBEAT_INTERVAL_S": "1",
    "IPP_HEARTBEAT_GRACE_S": "5",
    "IPP_CLIENT_STALE_S": "10",
    "IPP_SWEEP_INTERVAL_S": "2",
    "IPP_DXLAYER_POLL_S": "0.5",
    "IPP_METRICS_INTERVAL_S": "10",
    "IPP_BATCH_RETRY_S": "5",
    "IPP_UPDATE_WAIT_S": "2",
    "IPP_LOG_FORMAT": "json",
}


def demo_home(tmp_path: Path, mirror_db: str) -> Path:
    """A copy of supervisord.conf whose mirror program uses ``mirror_db``."""
    home = tmp_path / "home"
    home.mkdir()
    conf = (ROOT / "supervisord.conf").read_text()
    assert 'IPP_DB_NAME="ipp_mirror"' in conf
    (home / "supervisord.conf").write_text(
        conf.replace('IPP_DB_NAME="ipp_mirror"', f'IPP_DB_NAME="{mirror_db}"')
    )
    return home


def demo_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPP_")}
    env.update(QUICK)
    env.update(
        {
            "IPP_VAR_DIR": str(home / "var"),
            "IPP_DS_PORT": str(free_port()),
            "IPP_ODM_PORT": str(free_port()),
            "IPP_METRICS_PORT": str(free_port()),
            "IPP_CONSOLE_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.update(extra)
    return env


def ippctl_demo(
    home: Path, env: dict[str, str], mirror_db: str, *args: str, timeout_s: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.ctl.main",
            "demo",
            "--conf",
            str(home / "supervisord.conf"),
            "--mirror-db",
            mirror_db,
            "--exposures",
            "2",
            "--chips",
            "2",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def assert_all_checks_hold(out: subprocess.CompletedProcess[str], kills: int) -> dict[str, Any]:
    """``kills`` 0: a run without the fault campaign."""
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.index("{\n") :])
    counts = result["counts"]
    assert result["problems"] == []
    assert counts["faults"]["kills"] >= kills
    assert counts["faults"]["volume_outages"] == (1 if kills else 0)
    assert counts["psps_items"] and set(counts["psps_items"]) <= {"done", "failed"}
    assert counts["runs"]["chip"] == {"cleaned": 1, "full": 1}  # chip 1 updated, 2 cleaned
    assert counts["runs"]["diff"] == {"cleaned": 2}
    # seed 001: only a destreaked run is distributed; exposure 1's chip run never was, so it
    # waits at the source and the mirror imports exposure 0's alone
    assert counts["filesets_imported"] == {"full": 1}
    assert counts["psps_rows"]["P2"] > 0
    for site in counts["storage"].values():
        assert site["missing"] == site["orphans"] == site["empty_objects"] == 0
    return dict(counts)


async def _drop(test_dsn: str, names: dict[str, str]) -> None:
    settings = load_settings(environ={}, db_dsn=test_dsn)
    for name in names.values():
        await drop_database(settings, parse_dsn(test_dsn).with_database(name))


async def every_program_up(env: dict[str, str], home: Path, mirror_db: str) -> bool:
    """What the demo itself waits for: every program RUNNING and registered in clients."""
    settings = load_settings(environ=env)
    plan = demo.Plan(conf=home / "supervisord.conf", mirror_db=mirror_db)
    sites = await demo.connect(settings, plan)
    try:
        return await demo.every_program_up(demo.Shell(settings, env=env), plan, sites)
    finally:
        await sites.close()


async def _databases(test_dsn: str, names: dict[str, str]) -> set[str]:
    settings = load_settings(environ={}, db_dsn=test_dsn)
    return {
        n for n in names.values() if await database_exists(settings, parse_dsn(test_dsn).with_database(n))
    }


@pytest.mark.timeout(1500)
async def test_the_demo_runs_again_on_its_own_state_after_ctrl_c_and_after_a_finished_walk(
    test_dsn, tmp_path
):
    base = parse_dsn(test_dsn).database
    names = {"ipp": f"{base}_demo", "mirror": f"{base}_demomirror", "psps": f"{base}_demopsps"}
    home = demo_home(tmp_path, names["mirror"])
    env = demo_env(home, IPP_DB_DSN=test_dsn, IPP_DB_NAME=names["ipp"], IPP_PSPS_DB_NAME=names["psps"])
    try:
        # make demo's way: the live screen, then Ctrl-C (once every program is up) stops
        # everything cleanly
        screen = tmp_path / "screen.txt"
        with open(screen, "w") as screen_out:
            live = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shared.ctl.main",
                    "demo",
                    "--conf",
                    str(home / "supervisord.conf"),
                    "--mirror-db",
                    names["mirror"],
                    "--exposures",
                    "2",
                    "--chips",
                    "2",
                ],
                cwd=ROOT,
                env=env,
                stdout=screen_out,
                stderr=subprocess.STDOUT,
            )
        try:
            await eventually(
                lambda: "merged" in screen.read_text() and "loader" in screen.read_text(),
                timeout_s=240,
                what="the live screen with agents and batches",
            )
            await eventually(
                lambda: every_program_up(env, home, names["mirror"]),
                timeout_s=240,
                what="every program running and registered",
            )
            text = screen.read_text()
            for part in (
                "status page: http://127.0.0.1:",
                "runs",
                "distribution:",
                "PSPS items:",
                "deleted_local",
                "PSPS holds:",
                "heartbeat",
            ):
                assert part in text, part
            live.send_signal(signal.SIGINT)
            assert live.wait(timeout=120) == 0, screen.read_text()[-2000:]
        finally:
            if live.poll() is None:
                live.kill()
        assert not (home / "var" / "supervisord.pid").exists()  # everything stopped
        for log in sorted((home / "logs").glob("*_0*.log")):
            if not log.name.startswith("psps_sim"):
                assert '"event": "agent_stopped"' in log.read_text(), log.name
        assert json.loads((home / "var" / "demo-state.json").read_text())["databases"] == [
            names["ipp"],
            names["mirror"],
            names["psps"],
        ]

        # the short fault campaign on the state the live demo left (half-loaded, shipped)
        started = time.monotonic()
        out = ippctl_demo(
            home,
            env,
            names["mirror"],
            "--until-done",
            "--json",
            "--faults",
            "--kills",
            "6",
            "--timeout",
            "600",
        )
        assert "starting over" in out.stdout, out.stdout[-2000:]
        counts = assert_all_checks_hold(out, kills=6)
        assert counts["faults"]["db_restarts"] == 0  # not the private server: not restarted
        assert time.monotonic() - started < 700

        # and once more, on the cleaned and updated state that walk left
        again = ippctl_demo(home, env, names["mirror"], "--until-done", "--json", "--timeout", "600")
        assert "starting over" in again.stdout
        assert_all_checks_hold(again, kills=0)

        reset = ippctl_demo(home, env, names["mirror"], "--reset")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert f"dropped database {names['ipp']}" in reset.stdout
        assert await _databases(test_dsn, names) == set()
        assert not (home / "var" / "storage").exists()
        assert not (home / "var" / "demo-state.json").exists()
    finally:
        subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(home / "supervisord.conf"), "shutdown"],
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        await _drop(test_dsn, names)


async def test_the_demo_reset_drops_no_database_it_did_not_create(test_dsn, tmp_path):
    """A database that was there before the demo's first set-up is refused by name."""
    base = parse_dsn(test_dsn).database
    names = {"ipp": base, "mirror": f"{base}_rsmirror", "psps": f"{base}_rspsps"}
    home = demo_home(tmp_path, names["mirror"])
    env = demo_env(home, IPP_DB_DSN=test_dsn, IPP_DB_NAME=names["ipp"], IPP_PSPS_DB_NAME=names["psps"])
    (home / "var").mkdir()
    (home / "var" / "demo-state.json").write_text(json.dumps({"databases": [names["mirror"]]}))
    (home / "var" / "storage").mkdir()
    out = ippctl_demo(home, env, names["mirror"], "--reset")
    assert out.returncode == 1
    assert f"database {parse_dsn(test_dsn).display()} was not created by the demo" in out.stderr
    assert await _databases(test_dsn, {"ipp": base}) == {base}


@pytest.mark.faults
@pytest.mark.timeout(2400)
def test_the_full_fault_campaign_on_a_private_server(tmp_path):
    """At least 20 SIGKILLs, a database restart, a failing ODM and a volume outage; the
    demo's own private MariaDB (so restarting it touches nothing else)."""
    if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
        pytest.skip("mariadbd not installed")
    counts = fault_campaign(demo_home(tmp_path, "ipp_mirror"), kills=20)
    print(json.dumps(counts["faults"]), counts["psps_rows"], counts["storage"])


def fault_campaign(home: Path, kills: int, *demo_args: str) -> dict[str, Any]:
    """``ippctl demo --until-done --faults --kills N DEMO_ARGS`` in ``home``, its checks
    asserted; afterwards its supervisord and its private server (or cluster) are stopped."""
    env = demo_env(home)
    galera = ["--galera", demo_args[demo_args.index("--galera") + 1]] if "--galera" in demo_args else []
    try:
        out = ippctl_demo(
            home,
            env,
            "ipp_mirror",
            "--until-done",
            "--json",
            "--faults",
            "--kills",
            str(kills),
            *demo_args,
            "--timeout",
            "1500",
            timeout_s=1800,
        )
        counts = assert_all_checks_hold(out, kills=kills)
        assert counts["faults"]["db_restarts"] == 1
        return counts
    finally:
        subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(home / "supervisord.conf"), "shutdown"],
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        subprocess.run(
            [sys.executable, "-m", "shared.ctl.main", "db", "stop-local", *galera],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
            timeout=300,
        )
