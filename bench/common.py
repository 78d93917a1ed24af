"""What the benchmarks share: a database of their own, the machine, the results table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.settings import PROJECT_ROOT, Settings, load_settings, parse_dsn
from shared.db.database import Database
from shared.db.schema import create_database, drop_database, upgrade
from sim import workload

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its anchor."""

    name: str
    ours: float
    anchor: float
    unit: str
    anchor_name: str
    target: str
    ok: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.anchor if self.anchor else float("nan")


def machine() -> str:
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = ""
    with contextlib.suppress(OSError):
        server = subprocess.run(
            ["mariadbd", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}"
        f"; {server or 'server version unknown'}"
    )


@asynccontextmanager
async def bench_database(name: str) -> AsyncIterator[tuple[Settings, Database]]:
    """A fresh database ``name`` on the configured server, dropped afterwards."""
    base = load_settings()
    dsn = parse_dsn(base.effective_dsn()).with_database(name)
    settings = load_settings(db_dsn=dsn.url())
    await drop_database(settings, dsn)
    await create_database(settings, dsn)
    db = await Database.connect(settings, dsn, pool_size=4)
    try:
        await upgrade(db)
        await workload.create_tables(db)
        yield settings, db
    finally:
        await db.close()
        await drop_database(settings, dsn)


def write_results(figures: list[Figure], stem: str = "summary") -> Path:
    """Write ``bench/results/<stem>.md`` (the table) and ``<stem>.json``."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Benchmarks ({stamp})",
        "",
        f"Machine: {machine()}",
        "",
        "| figure | ours | anchor | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.name} | {f.ours:.4g} {f.unit} | {f.anchor:.4g} {f.unit} ({f.anchor_name}) "
            f"| {f'{f.ratio:.3f}' if f.anchor and 'none' not in f.anchor_name else 'n/a'} "
            f"| {f.target} | {'yes' if f.ok else 'NO'} |"
        )
    notes = [f"- {f.name}: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", *notes]
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(
        json.dumps([{**asdict(f), "ratio": f.ratio} for f in figures], indent=2)
    )
    return path


def agent_env(dsn: str, var_dir: Path | None = None, /, **settings: Any) -> dict[str, str]:
    """Environment for an agent process of a benchmark: its database, JSON logs, settings."""
    env = {**os.environ, "IPP_DB_DSN": dsn, "IPP_LOG_FORMAT": "json", "PYTHONPATH": str(PROJECT_ROOT)}
    if var_dir is not None:
        env["IPP_VAR_DIR"] = str(var_dir)
    env.update({f"IPP_{k.upper()}": str(v) for k, v in settings.items()})
    return env


async def run_agent_once(name: str, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    """``ipp-agent NAME --once ARGS``; its JSON log events (RuntimeError if it did not exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agents",
        name,
        "--once",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench: {name} exited {proc.returncode}")
    events = []
    for line in out.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def working_seconds(events: list[dict[str, Any]]) -> float:
    """Seconds from an agent's agent_started to its agent_stopped event."""
    stamps = {
        e["event"]: datetime.fromisoformat(e["timestamp"])
        for e in events
        if e.get("event") in ("agent_started", "agent_stopped")
    }
    return (stamps["agent_stopped"] - stamps["agent_started"]).total_seconds()
