"""The whole system on one machine: ``ippctl demo`` (and ``make demo``).

Set-up (idempotent, through the same ``ippctl`` commands an operator would type): the schema
of both sites (``ipp`` and its mirror), a small synthetic survey, the mirror's volume and its
DataStore source, the distribution product and standing target, a PSPS loading config with
its IN batch and queue. Then supervisord runs every agent (two loaders) and the PSPS
stand-in. Without ``--until-done`` a one-screen summary refreshes until Ctrl-C, which stops
everything cleanly. With ``--until-done`` the driver walks the survey through its life
(loaded, merged and cleaned up in PSPS and shipped to the mirror; then cleaned; then partly
updated), checks the outcome and prints the final counts. ``--faults`` adds the fault
campaign: SIGKILL of random agents at random moments, a database restart (local server),
the ODM failing a share of batches, a storage volume taken down and up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core.errors import DbError, IppError
from shared.core.log import get_logger
from shared.core.settings import PROJECT_ROOT, Settings, parse_dsn
from shared.ctl import demostate
from shared.db.database import Database
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.observe import metrics
from shared.processing.filerules import compressed_keys, regenerated_rules, rules_for
from shared.processing.runs import ProductFile, run_files
from shared.processing.stages import COMPONENT_STAGES, LIFECYCLE_STAGES, stage_query
from shared.storage.store import Storage

log = get_logger("demo")
CONFIG = "demo"
LABEL = "survey.nightly"
#: The demo cleans the stages whose components are cleaned one by one (chip, warp, diff).
CLEAN_STAGES = COMPONENT_STAGES
PSPS_TABLES = {"P2": "Detection", "ST": "StackDetection", "OB": "ObjectThin"}
PSPS_COUNTS = {
    "Detection": Q.demo_count_Detection,
    "StackDetection": Q.demo_count_StackDetection,
    "ObjectThin": Q.demo_count_ObjectThin,
}


class DemoError(IppError):
    """A step of the demo that failed, or an outcome that is not what it should be."""


@dataclass
class Plan:
    conf: Path = PROJECT_ROOT / "supervisord.conf"
    mirror_db: str = "ipp_mirror"
    exposures: int = 3
    chips: int = 4
    seed: int = 1
    timeout_s: float = 1800.0
    faults: bool = False
    kills: int = 20
    fail_share: float = 0.2
    restart_db: bool = True
    #: The nodes of the local Galera cluster the agents are spread over (empty: one server).
    galera_dsns: tuple[str, ...] = ()

    @property
    def galera_nodes(self) -> int:
        return len(self.galera_dsns)


# -- running ippctl and supervisorctl ------------------------------------------------------


@dataclass
class Shell:
    """Runs the project's own commands with the demo's environment."""

    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def bin(self, name: str) -> str:
        return str(Path(sys.executable).parent / name)

    async def run(self, *argv: str, extra: dict[str, str] | None = None, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**self.env, **(extra or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(PROJECT_ROOT),
        )
        out, err = await proc.communicate()
        if check and proc.returncode != 0:
            raise DemoError(
                f"{' '.join(argv[:4])}...: exit {proc.returncode}: "
                f"{err.decode(errors='replace').strip()[-400:]}"
            )
        return out.decode(errors="replace")

    async def ippctl(self, *args: str, site: str | None = None, check: bool = True) -> str:
        extra = {"IPP_DB_NAME": site} if site else None
        return await self.run(sys.executable, "-m", "shared.ctl.main", *args, extra=extra, check=check)

    async def supervisorctl(self, conf: Path, *args: str, check: bool = False) -> str:
        return await self.run(self.bin("supervisorctl"), "-c", str(conf), *args, check=check)


# -- set-up --------------------------------------------------------------------------------


async def setup(sh: Shell, plan: Plan) -> None:
    """Both sites, the survey, distribution and the loading config (each step once)."""
    s = sh.settings
    if not s.db_dsn:
        await sh.ippctl("db", "start-local")
    await demostate.record(s, plan.mirror_db)
    await sh.ippctl("db", "upgrade")
    await sh.ippctl("db", "upgrade", site=plan.mirror_db)
    if json.loads(await sh.ippctl("runs", "list", "--stage", "chip", "--limit", "1", "--json")) == []:
        print(
            f"generating a small synthetic survey ({plan.exposures} exposures x {plan.chips} chips)",
            flush=True,
        )
        await sh.run(
            sys.executable,
            "-m",
            "sim",
            "survey",
            "--exposures",
            str(plan.exposures),
            "--chips",
            str(plan.chips),
            "--seed",
            str(plan.seed),
        )
    if json.loads(await sh.ippctl("storage", "volume", "list", "--json", site=plan.mirror_db)) == []:
        root = Path(s.var_dir) / "storage" / plan.mirror_db / "vol0"
        await sh.ippctl("storage", "volume", "add", f"{plan.mirror_db}.0", str(root), site=plan.mirror_db)
    if not any(
        line.startswith(("ipp-dist ", "ipp-dist|")) for line in (await sh.ippctl("ds", "ls")).splitlines()
    ):
        await sh.ippctl(
            "ds",
            "product",
            "add",
            "ipp-dist",
            "--type",
            "ipp-dist",
            "--description",
            "distribution",
            "--columns",
            "target_id,stage,stage_id,exp_name",
        )
        await sh.ippctl(
            "dist", "target", "add", "--dist-group", "survey", "--stage", "chip", "--product", "ipp-dist"
        )
    if not any(
        line.startswith("ipp ")
        for line in (await sh.ippctl("dist", "source", "ls", site=plan.mirror_db)).splitlines()
    ):
        await sh.ippctl(
            "dist",
            "source",
            "add",
            "ipp",
            "--uri",
            f"http://{s.ds_host}:{s.ds_port}/ds",
            "--product",
            "ipp-dist",
            site=plan.mirror_db,
        )
    names = [c["name"] for c in json.loads(await sh.ippctl("psps", "config", "list", "--json"))]
    if CONFIG not in names:
        await sh.ippctl(
            "psps",
            "config",
            "set",
            CONFIG,
            "dvo_label=ipp.dvo",
            f"dvo_location={Path(s.var_dir) / 'dvo' / 'ipp'}",
            "min_ra=9",
            "max_ra=11",
            "min_dec=19",
            "max_dec=21",
            "box_size_deg=0.5",
            "datastore_publish=1",
        )
    await sh.ippctl("psps", "init", CONFIG)
    await sh.ippctl("psps", "queue", CONFIG)


async def start_agents(sh: Shell, plan: Plan, extra_env: dict[str, str]) -> None:
    for sub in ("logs", "var"):
        await asyncio.to_thread((plan.conf.parent / sub).mkdir, exist_ok=True)
    path = f"{Path(sys.executable).parent}{os.pathsep}{sh.env.get('PATH', '')}"
    conf = plan.conf
    if plan.galera_dsns:
        conf = plan.conf.parent / "var" / "supervisord.galera.conf"
        text = await asyncio.to_thread(plan.conf.read_text)
        await asyncio.to_thread(conf.write_text, spread_over_nodes(text, plan.conf.parent, plan.galera_dsns))
    await sh.run(sh.bin("supervisord"), "-c", str(conf), extra={**extra_env, "PATH": path})


def spread_over_nodes(conf: str, here: Path, dsns: tuple[str, ...]) -> str:
    """The supervisord.conf with each program pointed at the next Galera node in turn (its
    ``environment`` gains IPP_DB_DSN), and ``%(here)s`` resolved to the original's directory
    so the copy runs with the same logs, socket and pid file."""
    out: list[str] = []
    program = -1
    for line in conf.replace("%(here)s", str(here)).splitlines():
        if line.startswith("[program:"):
            program += 1
        if line.startswith("environment=") and program >= 0:
            line += f',IPP_DB_DSN="{dsns[program % len(dsns)]}"'
        out.append(line)
    return "\n".join(out) + "\n"


async def stop_agents(sh: Shell, plan: Plan) -> None:
    pidfile = plan.conf.parent / "var" / "supervisord.pid"
    if not _supervisord_running(pidfile):
        return
    await sh.supervisorctl(plan.conf, "shutdown")
    for _ in range(600):  # supervisord exits once every program has stopped
        if not _supervisord_running(pidfile):
            return
        await asyncio.sleep(0.1)


def _supervisord_running(pidfile: Path) -> bool:
    """True while the supervisord of ``pidfile`` lives (a stale file, left by a killed one,
    is removed)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    except PermissionError:
        return True
    return True


async def start_over(sh: Shell, plan: Plan) -> None:
    """``ippctl demo --reset``: stop the demo's agents, drop what it made."""
    if not sh.settings.db_dsn:
        await sh.ippctl("db", "start-local")
    print("stopping the demo's agents (if running)", flush=True)
    await stop_agents(sh, plan)
    for line in await demostate.reset(sh.settings, plan.mirror_db):
        print(line, flush=True)


# -- what the system holds -----------------------------------------------------------------


@dataclass
class Snapshot:
    runs: dict[str, dict[str, int]]
    mirror_runs: dict[str, dict[str, int]]
    shipped: int
    imported: dict[str, int]
    items: dict[str, int]
    summary: metrics.LoadingSummary
    unfinished_batches: int
    psps_rows: dict[str, int]
    clients: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "mirror_runs": self.mirror_runs,
            "filesets_shipped": self.shipped,
            "filesets_imported": self.imported,
            "psps_items": self.items,
            "psps": self.summary.as_json(),
            "psps_rows": self.psps_rows,
            "unfinished_batches": self.unfinished_batches,
            "clients": len(self.clients),
        }


@dataclass
class Sites:
    ipp: Database
    mirror: Database
    psps: Database | None

    async def close(self) -> None:
        for db in (self.ipp, self.mirror, self.psps):
            if db is not None:
                await db.close()


async def connect(settings: Settings, plan: Plan) -> Sites:
    """The demo's own connections; on a cluster its checks read causally (sync_wait 1), so
    they see what agents committed through other nodes."""
    dsn = parse_dsn(settings.effective_dsn())
    ipp = await Database.connect(settings, dsn, sync_wait=1)
    mirror = await Database.connect(settings, dsn.with_database(plan.mirror_db), sync_wait=1)
    return Sites(ipp, mirror, None)


async def _psps_rows(sites: Sites, settings: Settings) -> dict[str, int]:
    if sites.psps is None:
        try:
            sites.psps = await Database.connect(settings, settings.psps_effective_dsn(), wait_s=0)
        except DbError:
            return {}
    out = {}
    for kind, table in PSPS_TABLES.items():
        try:
            out[kind] = int(await sites.psps.fetch_val(PSPS_COUNTS[table]) or 0)
        except DbError:  # the stand-in has not made its tables yet
            out[kind] = 0
    return out


async def snapshot(sites: Sites, settings: Settings) -> Snapshot:
    life = await metrics.lifecycle(Databases.single(sites.ipp))
    mirror = await metrics.lifecycle(Databases.single(sites.mirror))
    items = {str(r["state"]): int(r["n"]) for r in await sites.ipp.fetch_all(Q.demo_items)}
    return Snapshot(
        runs=life.runs,
        mirror_runs=mirror.runs,
        shipped=int(await sites.ipp.fetch_val(Q.demo_shipped) or 0),
        imported=mirror.imported,
        items=items,
        summary=await metrics.loading_summary(sites.ipp, CONFIG),
        unfinished_batches=int(await sites.ipp.fetch_val(Q.demo_unfinished_batches) or 0),
        psps_rows=await _psps_rows(sites, settings),
        clients=[dict(c) for c in await metrics.clients(Databases.single(sites.ipp))],
    )


def screen(snap: Snapshot, status_url: str) -> str:
    """The one-screen summary of ``make demo``."""
    states = sorted({s for c in snap.runs.values() for s in c})
    lines = [
        f"IPP demo  {time.strftime('%H:%M:%S')}   status page: {status_url}   (Ctrl-C stops everything)",
        "",
        "runs       " + "".join(f"{s:>11}" for s in states),
    ]
    for stage, counts in snap.runs.items():
        lines.append(f"{stage:<11}" + "".join(f"{counts.get(s, 0):>11}" for s in states))
    imported = ", ".join(f"{k} {v}" for k, v in sorted(snap.imported.items())) or "none"
    lines += [
        "",
        f"distribution: {snap.shipped} filesets shipped; at the mirror: {imported}; "
        f"mirror chip runs: {sum(snap.mirror_runs.get('chip', {}).values())}",
        "",
        f"PSPS items: {', '.join(f'{k} {v}' for k, v in sorted(snap.items.items()))}",
        f"{'batches':<21}{'pending':>9}{'succeeded':>11}{'failed':>8}",
    ]
    for stage in metrics.BATCH_STAGES:
        c = snap.summary.stages.get(stage, {})
        lines.append(f"{stage:<21}{c.get('pending', 0):>9}{c.get('succeeded', 0):>11}{c.get('failed', 0):>8}")
    lines += [
        "",
        f"PSPS holds: {', '.join(f'{k} {v}' for k, v in snap.psps_rows.items())}",
        "",
        f"{'agent':<16}{'pid':>8} {'status':<9}{'heartbeat':>10}  current item",
    ]
    for client in snap.clients:
        if client["status"] in ("running", "paused", "stopping"):
            lines.append(
                f"{client['agent']:<16}{client['pid']:>8} {client['status']:<9}"
                f"{float(client['heartbeat_age_s'] or 0):>9.1f}s  "
                f"{(client['current_item'] or '-')[:40]}"
            )
    return "\n".join(lines) + "\n"


async def live(sites: Sites, settings: Settings, stop: asyncio.Event) -> None:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/"
    while not stop.is_set():
        try:
            text = screen(await snapshot(sites, settings), url)
        except DbError as exc:
            text = f"(database not reachable: {exc})\n"
        sys.stdout.write("\x1b[H\x1b[2J" + text)
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


# -- the walk through the life cycle --------------------------------------------------------


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], deadline: float) -> None:
    print(f"waiting: {what}", flush=True)
    while True:
        try:
            if await check():
                print(f"done:    {what}", flush=True)
                return
        except DbError as exc:  # the database may be restarting (fault campaign)
            log.info("demo_check_failed", error=str(exc))
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for: {what}")
        await asyncio.sleep(1.0)


async def loaded_and_shipped(sites: Sites) -> bool:
    ipp = sites.ipp
    if int(await ipp.fetch_val(Q.demo_items_open) or 0):
        return False
    if int(await ipp.fetch_val(Q.demo_unfinished_batches) or 0):
        return False
    full_chips = int(await ipp.fetch_val(Q.demo_destreaked_chips) or 0)
    shipped = int(await ipp.fetch_val(Q.demo_shipped) or 0)
    imported = int(await sites.mirror.fetch_val(Q.demo_imported) or 0)
    return full_chips > 0 and shipped >= full_chips and imported >= shipped


async def all_in(db: Database, stages: tuple[str, ...], states: tuple[str, ...]) -> bool:
    life = await metrics.lifecycle(Databases.single(db))
    return all(set(life.runs[s]) <= set(states) for s in stages)


Baseline = dict[tuple[str, int], dict[str, ProductFile]]


async def baseline(db: Database) -> Baseline:
    """Every run's files as they are now (keys, md5s)."""
    out: Baseline = {}
    for stage in LIFECYCLE_STAGES:
        for run in await db.fetch_all(stage_query("demo_runs", stage)):
            files = await run_files(db, stage, int(run["id"]))
            out[(stage, int(run["id"]))] = {f.key: f for f in files if f.exists}
    return out


# -- faults --------------------------------------------------------------------------------


@dataclass
class Faults:
    kills: int = 0
    db_restarts: int = 0
    volume_outages: int = 0
    requeued_cleanups: int = 0
    #: Galera: seconds from a node's SIGKILL until it was synced with the cluster again.
    node_rejoin_s: float | None = None
    log: list[str] = field(default_factory=list)


def conflicts_logged(logs: Path) -> int:
    """How many transactions the agents retried after a deadlock or, on a Galera cluster, a
    certification conflict (1213): their ``db_retry_conflict`` log events so far."""
    total = 0
    for path in logs.glob("*.log*"):
        with contextlib.suppress(OSError), path.open("rb") as f:
            total += sum(line.count(b'"db_retry_conflict"') for line in f)
    return total


async def _program_states(sh: Shell, plan: Plan) -> list[tuple[str, str, int | None]]:
    """(name, state, pid) of every program supervisord runs."""
    out = await sh.supervisorctl(plan.conf, "status")
    found: list[tuple[str, str, int | None]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isupper():
            pid = (
                int(parts[3].rstrip(","))
                if len(parts) >= 4 and parts[2] == "pid" and parts[3].rstrip(",").isdigit()
                else None
            )
            found.append((parts[0], parts[1], pid))
    return found


async def _programs(sh: Shell, plan: Plan) -> list[tuple[str, int]]:
    return [
        (name, pid)
        for name, state, pid in await _program_states(sh, plan)
        if state == "RUNNING" and pid is not None
    ]


async def every_program_up(sh: Shell, plan: Plan, sites: Sites) -> bool:
    """Every program RUNNING; every agent registered in its site's clients table (by pid);
    the PSPS stand-in, which is not an IPP client, answering on its ODM port."""
    states = await _program_states(sh, plan)
    if not states or any(state != "RUNNING" or pid is None for _, state, pid in states):
        return False
    registered = {
        int(c["pid"])
        for db in (sites.ipp, sites.mirror)
        for c in await metrics.clients(Databases.single(db))
        if c["status"] == "running"
    }
    for name, _, pid in states:
        if name.split(":")[-1].startswith("psps_sim"):
            if not await _answers(sh.settings.odm_host, sh.settings.odm_port):
                return False
        elif pid not in registered:
            return False
    return True


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def killer(sh: Shell, plan: Plan, faults: Faults, stop: asyncio.Event, rng: random.Random) -> None:
    """SIGKILL a random running program every few seconds until told to stop."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(1.0, 4.0))
        if stop.is_set():
            return
        programs = await _programs(sh, plan)
        if not programs:
            continue
        name, pid = rng.choice(programs)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            faults.kills += 1
            faults.log.append(f"SIGKILL {name} (pid {pid})")
            print(f"fault:   SIGKILL {name} (pid {pid}), kill {faults.kills}", flush=True)


async def restart_database(sh: Shell, plan: Plan, faults: Faults) -> None:
    """Stop and start the private local server (only it can be restarted from here); on a
    Galera cluster, SIGKILL its last node and start it again (it rejoins by state transfer
    while the others carry on)."""
    if plan.galera_dsns:
        cluster = ("--galera", str(plan.galera_nodes))
        last = ("--node", str(plan.galera_nodes))
        print(f"fault:   SIGKILL of Galera node {plan.galera_nodes}", flush=True)
        started = time.monotonic()
        await sh.ippctl("db", "stop-local", *cluster, *last, "--kill")
        await asyncio.sleep(3.0)
        await sh.ippctl("db", "start-local", *cluster, *last)
        faults.node_rejoin_s = round(time.monotonic() - started, 1)
        faults.db_restarts += 1
        faults.log.append(f"Galera node {plan.galera_nodes} killed and restarted")
        return
    print("fault:   restarting the database", flush=True)
    await sh.ippctl("db", "stop-local")
    await asyncio.sleep(3.0)
    await sh.ippctl("db", "start-local")
    faults.db_restarts += 1
    faults.log.append("database restarted")


async def volume_outage(sh: Shell, faults: Faults, volume: str, seconds: float) -> None:
    print(f"fault:   volume {volume} down for {seconds:.0f} s", flush=True)
    await sh.ippctl("storage", "volume", "set", volume, "down")
    await asyncio.sleep(seconds)
    await sh.ippctl("storage", "volume", "set", volume, "up")
    faults.volume_outages += 1
    faults.log.append(f"volume {volume} down and up")


# -- checks --------------------------------------------------------------------------------


@dataclass
class Outcome:
    counts: dict[str, Any]
    problems: list[str]


def expected(stage: str, state: str, updated: bool) -> Callable[[ProductFile], bool]:
    """Which of a run's earlier files must still be there: all while it is full and was never
    touched; once cleaned, what cleanup keeps; once updated, that plus what an update makes
    again (REFERENCE 2 and 3). Logs are checked apart (cleanup compresses them)."""
    if state == "full" and not updated:
        return lambda f: True
    kept = {r.name for r in rules_for(stage) if not r.deleted_for("cleaned")}
    if updated:
        kept |= {r.name for r in regenerated_rules(stage)}
    return lambda f: f.rule in kept


async def check_files(db: Database, before: Baseline, updated: set[tuple[str, int]]) -> list[str]:
    """Files the rules keep are all there; regenerated files are byte-identical."""
    problems = []
    for (stage, run_id), files in before.items():
        state = str((await db.fetch_one(stage_query("demo_run_state", stage), id=run_id) or {}).get("state"))
        now = {f.key: f for f in await run_files(db, stage, run_id) if f.exists}
        was_updated = (stage, run_id) in updated
        wanted = expected(stage, state, was_updated)
        for key, f in files.items():
            if (f.file_class == "log" and state != "full") or (f.file_class == "log" and was_updated):
                if key not in now and not any(k in now for k in compressed_keys(key)):
                    problems.append(f"{stage} {run_id}: log {key} neither kept nor compressed")
            elif wanted(f) and key not in now:
                problems.append(f"{stage} {run_id} ({state}): {key} is missing")
            elif key in now and now[key].md5sum != f.md5sum:
                problems.append(f"{stage} {run_id}: {key} has another md5 than before")
    return problems


async def check_mirror(sites: Sites, before: Baseline) -> list[str]:
    """Every chip run at the mirror has the source's files, md5 for md5, and none was shipped
    before its destreak (seed 001)."""
    problems = []
    unmagicked = int(await sites.mirror.fetch_val(Q.demo_unmagicked_at_mirror) or 0)
    if unmagicked:
        problems.append(f"{unmagicked} chip runs at the mirror were never destreaked (magicked 0)")
    for row in await sites.mirror.fetch_all(Q.demo_runs_chip):
        run_id = int(row["id"])
        mine = {
            (f.component, f.rule): f.md5sum for f in await run_files(sites.mirror, "chip", run_id) if f.exists
        }
        theirs = {(f.component, f.rule): f.md5sum for f in before.get(("chip", run_id), {}).values()}
        if mine != theirs:
            missing = sorted(set(theirs) - set(mine))[:3]
            problems.append(f"mirror chip {run_id} differs from the source (missing {missing})")
    return problems


async def check_psps(sites: Sites, settings: Settings) -> tuple[dict[str, int], list[str]]:
    problems = []
    expected = {str(r["type"]): int(r["n"] or 0) for r in await sites.ipp.fetch_all(Q.demo_merged_detections)}
    held = await _psps_rows(sites, settings)
    for kind, table in PSPS_TABLES.items():
        if held.get(kind, 0) != expected.get(kind, 0):
            problems.append(
                f"PSPS {table} holds {held.get(kind, 0)} rows, the merged {kind} "
                f"batches carry {expected.get(kind, 0)}"
            )
    open_items = int(await sites.ipp.fetch_val(Q.demo_items_open) or 0)
    if open_items:
        problems.append(f"{open_items} PSPS items are not in a final state")
    unfinished = int(await sites.ipp.fetch_val(Q.demo_unfinished_batches) or 0)
    if unfinished:
        problems.append(f"{unfinished} published batches are not finished (merged or failed, copies deleted)")
    return held, problems


async def check_storage(db: Database, site: str) -> tuple[dict[str, int], list[str]]:
    report = await Storage(db).audit()
    problems = [f"{site}: registered but missing: {m}" for m in report.missing[:5]]
    problems += [f"{site}: not registered: {o}" for o in report.orphans[:5]]
    problems += [f"{site}: object without instances: {o}" for o in report.empty_objects[:5]]
    return {
        "files": report.files,
        "missing": len(report.missing),
        "orphans": len(report.orphans),
        "temporaries": len(report.temporaries),
        "empty_objects": len(report.empty_objects),
    }, problems


# -- the driver ----------------------------------------------------------------------------


async def _clean_everything(sh: Shell, sites: Sites, faults: Faults, plan: Plan, deadline: float) -> None:
    for stage in CLEAN_STAGES:
        await sh.ippctl(
            "runs", "set-state", "--stage", stage, "--label", LABEL, "--state", "goto_cleaned", check=False
        )
    outage = None
    if plan.faults:
        volumes = json.loads(await sh.ippctl("storage", "volume", "list", "--json"))
        outage = asyncio.create_task(
            volume_outage(sh, faults, volumes[0]["name"], 8.0), name="fault_volume_outage"
        )
    try:
        while True:
            await wait_for(
                "chip, warp and diff runs cleaned (or in error)",
                lambda: all_in(sites.ipp, CLEAN_STAGES, ("cleaned", "error_cleaned")),
                deadline,
            )
            if outage is not None:
                await outage  # the volume is back before failed cleanups are asked again
            errors = 0
            for stage in CLEAN_STAGES:
                rows = await sites.ipp.fetch_all(stage_query("demo_runs", stage))
                for r in rows:
                    if r["state"] == "error_cleaned":  # the runbook: ask again once it is up
                        await sh.ippctl(
                            "runs",
                            "set-state",
                            "--stage",
                            stage,
                            "--id",
                            str(r["id"]),
                            "--state",
                            "goto_cleaned",
                        )
                        errors += 1
            faults.requeued_cleanups += errors
            if not errors:
                return
    finally:
        if outage is not None and not outage.done():
            await outage


async def _update_some(sh: Shell, sites: Sites, deadline: float) -> set[tuple[str, int]]:
    updated = {("chip", 1), ("warp", 1)}
    for stage, run_id in sorted(updated):
        await sh.ippctl("runs", "request-update", "--stage", stage, "--id", str(run_id))

    async def back() -> bool:
        states = [
            (await sites.ipp.fetch_one(stage_query("demo_run_state", s), id=i) or {}).get("state")
            for s, i in updated
        ]
        return all(s == "full" for s in states)

    await wait_for("chip 1 and warp 1 updated (full again)", back, deadline)
    return updated


async def walk(
    sh: Shell, sites: Sites, plan: Plan, faults: Faults, deadline: float
) -> tuple[Baseline, set[tuple[str, int]], list[str]]:
    """Loaded and shipped, then cleaned, then partly updated."""
    before = await baseline(sites.ipp)
    if plan.faults and plan.restart_db and (plan.galera_dsns or demostate.local_server(sh.settings)):
        await asyncio.sleep(6.0)
        await restart_database(sh, plan, faults)
    await wait_for(
        "PSPS batches loaded, merged, copies deleted; chip runs shipped and imported at the mirror",
        lambda: loaded_and_shipped(sites),
        deadline,
    )
    mirror_problems = await check_mirror(sites, before)
    await _clean_everything(sh, sites, faults, plan, deadline)
    updated = await _update_some(sh, sites, deadline)
    if plan.faults:
        await wait_for(
            f"at least {plan.kills} agents killed", lambda: _at_least(faults, plan.kills), deadline
        )
    return before, updated, mirror_problems


async def _at_least(faults: Faults, kills: int) -> bool:
    return faults.kills >= kills


async def until_done(settings: Settings, plan: Plan, sh: Shell) -> Outcome:
    """Set up, run, walk the survey through its life, stop, check; the final counts."""
    deadline = time.monotonic() + plan.timeout_s
    if demostate.DemoState.load(settings) is not None:
        print(
            "an earlier demo left its state here: starting over (as 'ippctl demo --reset' "
            "does), so every check meets the runs as this walk leaves them",
            flush=True,
        )
        await start_over(sh, plan)
    await setup(sh, plan)
    env = {"IPP_ODM_FAIL_SHARE": str(plan.fail_share)} if plan.faults else {}
    conflicts_before = await asyncio.to_thread(conflicts_logged, plan.conf.parent / "logs")
    await start_agents(sh, plan, env)
    faults, stop_killing = Faults(), asyncio.Event()
    killing: asyncio.Task[None] | None = None
    sites = None
    try:
        sites = await connect(settings, plan)
        up = sites
        await wait_for(
            "every program running, every agent registered", lambda: every_program_up(sh, plan, up), deadline
        )
        if plan.faults:
            killing = asyncio.create_task(
                killer(sh, plan, faults, stop_killing, random.Random(plan.seed)), name="fault_killer"
            )
        before, updated, problems = await walk(sh, sites, plan, faults, deadline)
        stop_killing.set()
        if killing is not None:
            await killing
        # after the last kill the restarted agents finish what was cut short
        await wait_for("everything settled after the last fault", lambda: loaded_and_shipped(sites), deadline)
    except BaseException:
        if sites is not None:
            await sites.close()
        raise
    finally:
        stop_killing.set()
        if killing is not None and not killing.done():
            killing.cancel()
        await stop_agents(sh, plan)
    try:
        problems += await check_files(sites.ipp, before, updated)
        held, psps_problems = await check_psps(sites, settings)
        storage, storage_problems = await check_storage(sites.ipp, "ipp")
        mirror_storage, mirror_problems = await check_storage(sites.mirror, plan.mirror_db)
        snap = await snapshot(sites, settings)
    finally:
        await sites.close()
    counts = {
        **snap.as_json(),
        "storage": {"ipp": storage, plan.mirror_db: mirror_storage},
        "faults": {
            "kills": faults.kills,
            "db_restarts": faults.db_restarts,
            "volume_outages": faults.volume_outages,
            "cleanups_asked_again": faults.requeued_cleanups,
            "node_rejoin_s": faults.node_rejoin_s,
        },
        "galera_nodes": plan.galera_nodes,
        "conflicts_retried": await asyncio.to_thread(conflicts_logged, plan.conf.parent / "logs")
        - conflicts_before,
        "psps_rows": held,
    }
    return Outcome(counts, problems + psps_problems + storage_problems + mirror_problems)


def report(outcome: Outcome) -> str:
    c = outcome.counts
    lines = ["", "final counts"]
    for stage, states in c["runs"].items():
        lines.append(f"  {stage:<8} " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    lines.append(
        f"  filesets shipped {c['filesets_shipped']}, imported at the mirror "
        f"{c['filesets_imported']}; mirror chip runs "
        f"{sum(c['mirror_runs'].get('chip', {}).values())}"
    )
    stages = c["psps"]["stages"]
    lines.append(
        "  PSPS batches: "
        + ", ".join(f"{s} {v['succeeded']}/{v['failed']}" for s, v in stages.items())
        + "  (succeeded/failed)"
    )
    lines.append(f"  PSPS items: {c['psps_items']}; rows in PSPS: {c['psps_rows']}")
    for site, st in c["storage"].items():
        lines.append(f"  storage {site}: {st}")
    lines.append(f"  faults: {c['faults']}")
    if c.get("galera_nodes"):
        lines.append(
            f"  Galera: {c['galera_nodes']} nodes; transactions retried after a conflict (1213): "
            f"{c['conflicts_retried']}"
        )
    lines.append("problems: " + ("none" if not outcome.problems else ""))
    lines += [f"  - {p}" for p in outcome.problems]
    return "\n".join(lines) + "\n"


async def run_live(settings: Settings, plan: Plan, sh: Shell) -> None:
    """``make demo``: set up, start, show the screen until Ctrl-C, stop cleanly."""
    await setup(sh, plan)
    await start_agents(sh, plan, {})
    sites = await connect(settings, plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await live(sites, settings, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("\nstopping every agent (each finishes or hands back its item)...", flush=True)
        await stop_agents(sh, plan)
        await sites.close()
