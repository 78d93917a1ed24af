"""The ippToPsps operators' own forms (seed 003, issue 19 points 4, 6, 7 and 10): every program
takes ``--config edit``, the loader makes the IN batch with ``init``, the repeat-every-n-hours
argument, and a log file named with program, config, host and PID."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from shared.db.database import Database, Row
from shared.db.queries import Query
from shared.psps import configs
from tests.helpers import ROOT, AgentProcess, agent_env, eventually

CLIENT = Query("t_client", "SELECT status, current_item FROM clients WHERE client_id = %(id)s", "test")
BATCHES = Query("t_b", "SELECT name, type, processed, loaded_to_datastore, fileset FROM psps_batch", "test")


def _on_a_terminal(
    args: list[str], env: dict[str, str], answers: str, timeout_s: float = 120
) -> tuple[int, str]:
    """Run a program with a pseudo-terminal as its stdin and stdout, type ``answers`` into
    it, and collect what it printed until it exits."""
    master, slave = os.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    os.write(master, answers.encode())
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the program closed the terminal (it exited)
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{args} did not exit within {timeout_s}s:\n{out.decode(errors='replace')}")
        return proc.wait(timeout=30), out.decode(errors="replace")
    finally:
        os.close(master)


async def test_an_agent_started_with_config_edit_asks_then_runs_with_that_config(db, test_dsn):
    """Seed 003: "edit allows the user to edit, or create, a config then the program
    proceeds to use that config"."""
    answers = "cfgT\n" + "PSPS_T\n" + "\n" * (len(configs.FIELDS) - 1)
    code, out = _on_a_terminal(
        [sys.executable, "-m", "agents", "batch_cleaner", "--config", "edit", "--once"],
        {**agent_env(test_dsn), "IPP_LOG_FORMAT": "json"},
        answers,
    )
    assert code == 0, out
    assert " * Name for new config, or existing config to edit? " in out
    assert " * datastore_type (varchar(30)) hit return to accept default of: 'IPP_PSPS'? " in out
    assert '"event": "agent_started"' in out and '"config": "cfgT"' in out
    saved = await configs.get(db, "cfgT")
    assert saved is not None and saved["datastore_product"] == "PSPS_T"


def test_config_edit_without_a_terminal_is_refused_before_anything_is_asked(test_dsn):
    out = subprocess.run(
        [sys.executable, "-m", "agents", "odm_poller", "--config", "edit"],
        cwd=ROOT,
        env=agent_env(test_dsn),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "--config edit asks questions: run it on a terminal" in out.stderr
    assert "Name for new config" not in out.stdout


async def test_loader_init_makes_publishes_and_records_the_in_batch_then_stops(db, test_dsn, tmp_path):
    """Seed 003: ``loader.py someConfig init`` "will produce an IN batch, publish it, then stop"."""
    await configs.set_fields(db, "cfgI", {"datastore_publish": "1"})
    volume = subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", "storage", "volume", "add", "v.i", str(tmp_path / "vol")],
        cwd=ROOT,
        env=agent_env(test_dsn),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert volume.returncode == 0, volume.stderr
    var_dir = str(tmp_path / "var")
    first = AgentProcess("loader", test_dsn, tmp_path, "--config", "cfgI", "init", var_dir=var_dir)
    assert await first.wait(timeout_s=120) == 0, first.output()
    (published,) = first.events("batch_published")
    assert published["type"] == "IN" and published["fileset"] == published["batch"]
    rows = [r for r in await db.fetch_all(BATCHES) if r["type"] == "IN"]
    assert [(r["processed"], r["loaded_to_datastore"]) for r in rows] == [("succeeded", "succeeded")]
    assert first.events("agent_stopped")[0]["reason"] == "init: the IN batch is made"
    again = AgentProcess("loader", test_dsn, tmp_path, "--config", "cfgI", "init", var_dir=var_dir)
    assert await again.wait(timeout_s=120) == 0 and again.events("in_batch_exists")
    assert len([r for r in await db.fetch_all(BATCHES) if r["type"] == "IN"]) == 1
    nameless = AgentProcess("loader", test_dsn, tmp_path, "init", var_dir=var_dir)
    assert await nameless.wait(timeout_s=60) == 2  # no config at all: said before anything
    assert "loader works on PSPS loading configs and was given none" in nameless.output()
    every = AgentProcess("loader", test_dsn, tmp_path, "--config", "all", "init", var_dir=var_dir)
    assert await every.wait(timeout_s=60) == 1
    assert "loader init needs one config" in every.output()


@pytest.mark.parametrize("name", ["loader", "odm_poller", "batch_cleaner", "metrics"])
async def test_an_agent_that_works_per_config_and_is_given_none_says_so_and_stops(
    db, test_dsn, tmp_path, name
):
    """Issue 29: `ipp-agent loader` without --config ran as `all` and built another config's
    items. Seed 003: "Programs that require any extra arguments will prompt the user"; these
    say what to give and stop before they touch anything: `all` only when asked."""
    before = await db.fetch_val(Query("t_clients", "SELECT COUNT(*) FROM clients", "test"))
    proc = AgentProcess(name, test_dsn, tmp_path, "--once", var_dir=str(tmp_path / "var"))
    assert await proc.wait(timeout_s=60) == 2, proc.output()
    assert f"{name} works on PSPS loading configs and was given none" in proc.output()
    assert "--config all" in proc.output() and not proc.events("agent_started")
    assert await db.fetch_val(Query("t_clients", "SELECT COUNT(*) FROM clients", "test")) == before


async def test_every_hours_works_a_pass_then_waits_for_the_next_one_and_still_stops_at_once(
    db, test_dsn, tmp_path
):
    """Seed 003: metrics, pollOdm, cleanup and queue "take a time argument at start-up so
    that they can be scheduled to repeat every n hours"."""
    for name in ("batch_cleaner", "odm_poller", "metrics"):
        proc = AgentProcess(name, test_dsn, tmp_path, "--config", "all", "--every", "2")
        try:
            done = await eventually(_events(proc, "pass_complete"), timeout_s=60, what="a pass")
            assert 7000 < done[0]["next_pass_in_s"] <= 7200
            client = await eventually(_waiting(db, proc), timeout_s=30, what="the next pass shown")
            assert client["status"] == "running"
            proc.send(signal.SIGTERM)
            assert await proc.wait(timeout_s=30) == 0, proc.output()
            assert len(proc.events("pass_complete")) == 1
        finally:
            proc.kill()


async def test_the_poller_takes_pollodm_s_own_positional_form(db, test_dsn, tmp_path):
    """Seed 003: "Usage: pollOdm.py <configPath> <P2|ST|OB|all> <unloaded|unmergeworthy|
    unmerged|all> [hours]" and "./run.sh pollOdm.py all all all 1": the same as --config all
    --type all --stage all --every 1; another count or value is refused naming the flags."""
    proc = AgentProcess("odm_poller", test_dsn, tmp_path, "all", "P2", "unmerged", "1")
    try:
        done = await eventually(_events(proc, "pass_complete"), timeout_s=60, what="a pass")
        assert 3400 < done[0]["next_pass_in_s"] <= 3600
        assert proc.events("agent_started")[0]["config"] == "all"
        proc.send(signal.SIGTERM)
        assert await proc.wait(timeout_s=30) == 0, proc.output()
    finally:
        proc.kill()
    for form, problem in (
        (("all", "P2"), "form is CONFIG TYPE STAGE [HOURS] (--config, --type, --stage, --every)"),
        (("all", "XX", "all"), "pollOdm.py's TYPE 'XX' is not one of"),
        (("all", "all", "all", "0"), "pollOdm.py's HOURS"),
    ):
        bad = AgentProcess("odm_poller", test_dsn, tmp_path, "--once", *form)
        assert await bad.wait(timeout_s=60) == 2 and problem in bad.output(), bad.output()


def _events(proc: AgentProcess, name: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: proc.events(name)


def _waiting(db: Database, proc: AgentProcess) -> Callable[[], Awaitable[Row | None]]:
    """Its clients row once it shows when the next pass begins."""

    async def check() -> Row | None:
        row = await db.fetch_one(CLIENT, id=proc.client_id())
        return row if row is not None and str(row["current_item"] or "").startswith("next pass at ") else None

    return check


async def test_log_dir_writes_a_log_file_named_with_program_config_host_and_pid(db, test_dsn, tmp_path):
    """Seed 003: "log files, which include program name, config, host and PID in the name"."""
    await configs.set_fields(db, "cfgL", {})
    logs = tmp_path / "logs"
    proc = AgentProcess(
        "batch_cleaner", test_dsn, tmp_path, "--config", "cfgL", "--once", "--log-dir", str(logs)
    )
    assert await proc.wait(timeout_s=60) == 0, proc.output()
    (path,) = logs.iterdir()
    assert path.name == f"batch_cleaner_cfgL_{socket.gethostname()}_{proc.pid}.log"
    text = path.read_text()
    assert '"event": "agent_started"' in text and '"event": "agent_stopped"' in text
    # the same lines still go to stdout, for a supervisor or a terminal
    assert proc.events("agent_started") and Path(proc.log_path).read_text().count("agent_stopped") == 1


async def test_an_agent_run_by_hand_writes_its_log_file_by_default_and_a_supervised_one_does_not(
    db, test_dsn, tmp_path
):
    """Seed 003: "The loader writes log files, which include program name, config, host and
    PID in the name" without being asked: the log_dir setting (logs/ by default) is used when
    no --log-dir is given, unless supervisord or systemd keeps the output."""
    await configs.set_fields(db, "cfgL", {})
    logs = tmp_path / "default-logs"
    by_hand = AgentProcess(
        "batch_cleaner", test_dsn, tmp_path, "--config", "cfgL", "--once", log_dir=str(logs)
    )
    assert await by_hand.wait(timeout_s=60) == 0, by_hand.output()
    assert [p.name for p in logs.iterdir()] == [
        f"batch_cleaner_cfgL_{socket.gethostname()}_{by_hand.pid}.log"
    ]
    env = {**agent_env(test_dsn, log_dir=str(logs)), "SUPERVISOR_ENABLED": "1"}
    supervised = subprocess.run(
        [sys.executable, "-m", "agents", "batch_cleaner", "--config", "cfgL", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert supervised.returncode == 0 and b"agent_stopped" in supervised.stdout
    assert len(list(logs.iterdir())) == 1  # none more
