"""PSPS tracking figures: the ODM poller's status checks per second against the stand-in, and
``ippctl metrics all`` over a million batch rows.

Poller: N published batches the stand-in knows as merged; ``odm_poller --once`` asks about each
and records it (time from agent_started to agent_stopped), against a bare aiohttp loop making
the same N GETs with the same concurrency against the same ODM in the same run.

Metrics: a million psps_batch rows spread over three types, a week of publishing times and
every life-cycle outcome; ``ippctl metrics all`` (the whole command, process start included,
best of 3) against a plain ``SELECT config, type, COUNT(*) ... GROUP BY`` of the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import aiohttp

from bench.common import Figure, agent_env, bench_database, run_agent_once, working_seconds
from shared.core.settings import PROJECT_ROOT, Settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import drop_database
from shared.psps import configs

ADD_BATCHES = Query(
    "b_add_batches",
    """
INSERT INTO psps_batch (name, config, type, item_id, detections, processed, processed_at,
                        loaded_to_datastore, loaded_to_datastore_at, loaded_to_odm, merge_worthy,
                        merged, deleted_datastore, deleted_dxlayer, deleted_local, fileset)
SELECT CONCAT('B', LPAD(k, 8, '0')), %(config)s, ELT(1 + k %% 3, 'P2', 'ST', 'OB'),
       k, k %% 6000, IF(k %% 97 = 0, 'failed', 'succeeded'), NOW(6),
       IF(k %% 97 = 0, 'pending', 'succeeded'),
       IF(k %% 97 = 0, NULL, NOW(6) - INTERVAL (k %% 604800) SECOND),
       %(odm)s, %(odm)s, %(odm)s,
       IF(k %% 5 = 0, 'pending', 'succeeded'), IF(k %% 7 = 0, 'pending', 'succeeded'),
       IF(k %% 11 = 0, 'failed', 'succeeded'), CONCAT('B', LPAD(k, 8, '0'))
FROM (SELECT seq + %(offset)s AS k FROM seq_1_to_100000) s
WHERE k <= %(n)s""",
    "bench",
)
ADD_DX = Query(
    "b_add_dx",
    """
INSERT INTO dx_batch (name, product, type, status, loaded_at, merge_worthy_at, merged_at)
SELECT CONCAT('B', LPAD(seq, 8, '0')), 'PSPS_bench', 'P2', 'merged', NOW(6), NOW(6), NOW(6)
FROM seq_1_to_%(n)s""",
    "bench",
)
PLAIN = Query("b_plain", "SELECT config, type, COUNT(*) AS n FROM psps_batch GROUP BY config, type", "bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _add_batches(db: Database, n: int, odm: str) -> None:
    """``n`` batch rows, 100 000 per statement (MariaDB's sequence table seq_1_to_100000)."""
    for offset in range(0, n, 100_000):
        await db.execute(ADD_BATCHES, offset=offset, n=n, config="bench", odm=odm)


async def _bare_gets(base: str, names: list[str], parallel: int) -> float:
    gate = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession() as session:

        async def one(name: str) -> None:
            async with gate, session.get(f"{base}/odm/batch/{name}") as resp:
                await resp.json()

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in names))
        return time.perf_counter() - started


async def _wait_up(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/odm/summary") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("bench: the PSPS stand-in did not start")


async def poller_rate(batches: int) -> Figure:
    async with bench_database("ipp_bench_odm") as (settings, db):
        await configs.set_fields(db, "bench", {"datastore_product": "PSPS_bench", "datastore_publish": "1"})
        await _add_batches(db, batches, "pending")
        published = await db.fetch_all(
            Query("b_pub", "SELECT name FROM psps_batch WHERE loaded_to_datastore = 'succeeded'", "bench")
        )
        names = [str(r["name"]) for r in published]
        count = len(names)
        port = _free_port()
        psps_db = "ipp_bench_odm_psps"
        with TemporaryDirectory() as tmp:
            env = agent_env(
                settings.effective_dsn(),
                Path(tmp),
                odm_port=port,
                psps_db_name=psps_db,
                ds_port=_free_port(),
                dxlayer_poll_s=3600,
            )
            sim = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sim",
                "psps",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                await _wait_up(base)
                pdb = await Database.connect(
                    settings, parse_dsn(settings.effective_dsn()).with_database(psps_db)
                )
                try:
                    sql = ADD_DX.sql.replace("seq_1_to_%(n)s", f"seq_1_to_{int(batches)}")
                    await pdb.execute(Query(ADD_DX.name, sql, "bench"))
                finally:
                    await pdb.close()
                bare = await _bare_gets(base, names, settings.odm_parallel)
                events = await run_agent_once(
                    "odm_poller",
                    agent_env(settings.effective_dsn(), Path(tmp), odm_port=port),
                    "--config",
                    "all",
                )
                whole = working_seconds(events)
                ours = sum(float(e["duration_s"]) for e in events if e.get("event") == "odm_pass")
            finally:
                sim.terminate()
                await asyncio.wait_for(sim.wait(), 30)
                await drop_database(settings, parse_dsn(settings.effective_dsn()).with_database(psps_db))
    recorded = sum(1 for e in events if e.get("event") == "batch_status")
    return Figure(
        "ODM poller status checks (recorded)",
        count / ours,
        count / bare,
        "checks/s",
        "bare aiohttp GETs, same ODM, same concurrency",
        ">= 0.8x, every status recorded",
        recorded == count and count / ours >= 0.8 * count / bare,
        f"{count} batches, {settings.odm_parallel} in flight; the poller also writes "
        f"each status ({recorded} recorded); the agent's passes (odm_pass duration_s) "
        f"took {ours:.2f} s, the whole --once run {whole:.2f} s ({count / whole:.0f} checks/s "
        "with start-up, registering and the sweep)",
    )


def _ippctl_seconds(settings: Settings) -> float:
    env = {**os.environ, "IPP_DB_DSN": settings.effective_dsn(), "PYTHONPATH": str(PROJECT_ROOT)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "shared.ctl.main", "metrics", "all"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0 or "loaded_to_datastore" not in out.stdout:
        raise RuntimeError(f"bench: ippctl metrics failed: {out.stderr[-500:]}")
    return elapsed


async def metrics_summary(rows: int) -> list[Figure]:
    async with bench_database("ipp_bench_metrics") as (settings, db):
        await configs.set_fields(db, "bench", {})
        await _add_batches(db, rows, "succeeded")
        await db.execute(Query("b_an", "ANALYZE TABLE psps_batch", "bench"))
        plain = []
        for _ in range(3):
            started = time.perf_counter()
            await db.fetch_all(PLAIN)
            plain.append(time.perf_counter() - started)
        command = [await asyncio.to_thread(_ippctl_seconds, settings) for _ in range(3)]
        from shared.observe import metrics

        queries = []
        for _ in range(3):
            started = time.perf_counter()
            await metrics.loading_summary(db, "all")
            queries.append(time.perf_counter() - started)
    anchor = min(plain)
    return [
        Figure(
            f"ippctl metrics all, {rows:,} batch rows (whole command)",
            min(command),
            anchor,
            "s",
            "plain SELECT COUNT(*) GROUP BY",
            "< 1 s",
            min(command) < 1.0,
            f"median {statistics.median(command):.3f} s; includes Python start-up",
        ),
        Figure(
            f"loading summary queries, {rows:,} batch rows",
            min(queries),
            anchor,
            "s",
            "plain SELECT COUNT(*) GROUP BY",
            "report",
            True,
            "from the tables the psps_batch triggers keep, plus the last hour by index",
        ),
    ]


async def measure(batches: int, rows: int) -> list[Figure]:
    return [await poller_rate(batches), *await metrics_summary(rows)]


if __name__ == "__main__":
    for f in asyncio.run(
        measure(
            int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000,
        )
    ):
        print(f)
