"""Scale-out: agents on three hosts (network namespaces, tests/hosts.py) sharing one database
over TCP, and the demo workload on a three-node Galera cluster.

The default suite runs the short host test. ``make test-cluster`` (marker ``cluster``) runs
the long one (more items, two cuts) and the Galera demo with a node kill.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import create_database, upgrade
from sim import workload
from sim.workload import W
from tests.helpers import agent_env, eventually, run_ippctl
from tests.hosts import Host, Hosts, HostsUnavailable, Program

#: Host-side settings: quick heartbeats (tests.helpers.FAST) and statements that give up
#: soon on a dead link, so a cut-off host notices within seconds.
HOST_SETTINGS = {"db_statement_timeout_s": 4.0, "db_connect_timeout_s": 2.0, "drain_timeout_s": 10.0}

LOG_BY_CLIENT = Query(
    "t_log_by_client", "SELECT client_id, COUNT(*) AS n FROM sim_work_log GROUP BY client_id", "test"
)
OWNED = Query("t_owned", "SELECT item_id, owner FROM sim_work WHERE owner IS NOT NULL", "test")
DONE_BY = Query("t_done_by", "SELECT item_id, client_id FROM sim_work_log", "test")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    cluster = Hosts(Path("/tmp") / f"ipph-{tmp_path.name[-20:]}", settings=HOST_SETTINGS)
    try:
        cluster.start_network()
    except HostsUnavailable as exc:
        cluster.close()
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture
async def cluster_db(hosts: Hosts) -> AsyncIterator[tuple[str, Database]]:
    """The hosts' database (on the bridge), at the current schema, with the workload."""
    dsn = hosts.start_database()
    settings = load_settings(db_dsn=dsn)
    await create_database(settings, parse_dsn(dsn))
    db = await Database.connect(settings, pool_size=4)
    try:
        await upgrade(db)
        await workload.create_tables(db)
        yield dsn, db
    finally:
        await db.close()


async def clients(db: Database) -> list[dict[str, Any]]:
    return await db.fetch_all(Query("t_clients", "SELECT client_id, host, status FROM clients", "test"))


async def live_by_host(db: Database) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in await clients(db):
        if c["status"] in ("running", "paused", "idle"):
            out.setdefault(c["host"], set()).add(c["client_id"])
    return out


async def done_per_host(db: Database) -> dict[str, int]:
    host_of = {c["client_id"]: c["host"] for c in await clients(db)}
    out: dict[str, int] = {}
    for row in await db.fetch_all(LOG_BY_CLIENT):
        host = host_of.get(row["client_id"], "?")
        out[host] = out.get(host, 0) + int(row["n"])
    return out


async def add_items(db: Database, count: int, duration_ms: int) -> None:
    for _ in range(count):
        await db.insert(W.work_add, duration_ms=duration_ms)


def ippctl_on(hosts: Hosts, host: Host, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ippctl ARGS`` run on ``host`` (its network, hostname and mounts)."""
    return hosts.run_on(host, sys.executable, "-m", "shared.ctl.main", *args, env=agent_env(dsn))


def start_hosts(hosts: Hosts, dsn: str, per_host: int) -> None:
    """Workload agents on every host; host 2 also runs cleanup."""
    for host in hosts.hosts:
        programs = [Program("workload", numprocs=per_host)]
        if host.index == 2:
            programs.append(Program("cleanup"))
        hosts.start_host(host, programs, dsn)


async def shared_volumes(hosts: Hosts, dsn: str, db: Database) -> None:
    """Files one host writes on the shared volume, another host's cleanup removes, and a
    third host's audit finds consistent: all see the volume at the same path."""
    writer, cleaner, auditor = hosts.hosts
    env = agent_env(dsn, var_dir=str(hosts.mountpoint / "var"))
    made = hosts.run_on(writer, sys.executable, "-m", "sim", "survey", "--exposures", "1", "--chips", "2",
                        "--seed", "3", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    assert any((hosts.shared / "var" / "storage").rglob("*.fits")), "the survey wrote nothing to the share"
    out = run_ippctl(dsn, "runs", "set-state", "--stage", "chip", "--label", "survey.nightly",
                     "--state", "goto_cleaned")  # fmt: skip
    assert out.returncode == 0, out.stderr

    async def cleaned() -> bool:
        runs = json.loads(run_ippctl(dsn, "runs", "list", "--stage", "chip", "--json").stdout)
        return bool(runs) and all(r["state"] == "cleaned" for r in runs)

    await eventually(cleaned, timeout_s=120, what=f"chip runs cleaned by {cleaner.hostname}'s cleanup")
    audit = ippctl_on(hosts, auditor, dsn, "storage", "audit", "--json")
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["files"] > 0 and report["missing"] == [] and report["orphans"] == [], report


async def all_done(db: Database, total: int) -> bool:
    counts = {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)}
    return counts.get("done", 0) == total


async def check_done_once(db: Database, total: int) -> None:
    assert await db.fetch_all(W.work_log_duplicates) == []
    assert await db.fetch_val(W.work_log_count) == total
    assert {r["state"]: int(r["n"]) for r in await db.fetch_all(W.work_counts)} == {"done": total}


#: Items each phase adds for itself (so none finds the queue emptied by an earlier one).
PHASE_ITEMS = 18


async def pause_one_host(hosts: Hosts, dsn: str, db: Database) -> None:
    """A standing flag for one host pauses its agents and no other host's."""
    target = hosts.hosts[1]
    await add_items(db, PHASE_ITEMS, 1200)
    out = run_ippctl(dsn, "clients", "pause", "--agent", "all", "--host", target.hostname)
    assert out.returncode == 0, out.stderr

    async def paused_exactly() -> bool:
        by_status = {(c["host"], c["status"]) for c in await clients(db) if c["status"] != "dead"}
        hosts_paused = {h for h, s in by_status if s == "paused"}
        return hosts_paused == {target.hostname} and (target.hostname, "running") not in by_status

    await eventually(paused_exactly, timeout_s=60, what=f"only {target.hostname}'s agents paused")
    before = await done_per_host(db)
    await eventually(
        lambda: _others_progressed(db, before, target.hostname, 3),
        timeout_s=90,
        what="the other hosts to go on working",
    )
    after = await done_per_host(db)
    # a paused agent takes no new item (one it was finishing may have ended at the pause)
    assert after.get(target.hostname, 0) <= before.get(target.hostname, 0) + 2
    out = run_ippctl(dsn, "clients", "resume", "--agent", "all", "--host", target.hostname)
    assert out.returncode == 0, out.stderr
    await eventually(lambda: _none_paused(db), timeout_s=60, what=f"{target.hostname}'s agents running again")


async def _others_progressed(db: Database, before: dict[str, int], paused: str, by: int) -> bool:
    now = await done_per_host(db)
    return (
        sum(n for h, n in now.items() if h != paused) >= sum(n for h, n in before.items() if h != paused) + by
    )


async def _none_paused(db: Database) -> bool:
    return all(c["status"] != "paused" for c in await clients(db))


async def cut_off_and_return(hosts: Hosts, dsn: str, db: Database, more_items: int) -> None:
    """Cut the last host off: its clients are declared dead and what they held is done by
    the others; back on the network its agents find their claims gone (the owner check),
    exit, and fresh ones from that host work again."""
    target = hosts.hosts[-1]
    await add_items(db, PHASE_ITEMS, 1200)
    await eventually(
        lambda: _holds_items(db, target.hostname), timeout_s=60, what=f"{target.hostname} holding items"
    )
    hosts.link_down(target)
    cut_at = time.monotonic()
    cut_clients = (await live_by_host(db))[target.hostname]
    held = {r["item_id"] for r in await db.fetch_all(OWNED) if r["owner"] in cut_clients}
    assert held, "the cut-off host held no item at the cut"

    async def declared_dead() -> bool:
        status = {c["client_id"]: c["status"] for c in await clients(db)}
        return all(status[c] == "dead" for c in cut_clients)

    await eventually(declared_dead, timeout_s=60, what=f"{target.hostname}'s clients declared dead")
    dead_s = time.monotonic() - cut_at
    await eventually(
        lambda: _done_by_others(db, held, cut_clients),
        timeout_s=120,
        what="the cut-off host's items done elsewhere",
    )
    taken_s = time.monotonic() - cut_at
    hosts.link_up(target)
    up_at = time.monotonic()

    async def fresh_clients() -> set[str]:
        return (await live_by_host(db)).get(target.hostname, set()) - cut_clients

    fresh = await eventually(
        fresh_clients, timeout_s=180, what=f"fresh agents registered on {target.hostname}"
    )
    fresh_s = time.monotonic() - up_at
    # Only the returned host may work now, so what it does next shows it resumed.
    others = [h for h in hosts.hosts if h is not target]
    for host in others:
        out = run_ippctl(dsn, "clients", "pause", "--agent", "workload", "--host", host.hostname)
        assert out.returncode == 0, out.stderr
    await add_items(db, more_items, 400)

    async def back_and_working() -> bool:
        done = {r["client_id"] for r in await db.fetch_all(DONE_BY)}
        return bool(fresh & done)

    await eventually(back_and_working, timeout_s=180, what=f"fresh agents on {target.hostname} working again")
    for host in others:
        out = run_ippctl(dsn, "clients", "resume", "--agent", "workload", "--host", host.hostname)
        assert out.returncode == 0, out.stderr
    print(
        f"cut-off {target.hostname}: declared dead {dead_s:.1f} s after the cut, its {len(held)} "
        f"item(s) done elsewhere {taken_s:.1f} s after it; back on the network, fresh agents "
        f"registered after {fresh_s:.1f} s"
    )
    logs = target.log_text()
    assert '"client_declared_dead"' in logs
    # What it held when cut off was finished elsewhere and never by it: back on the network it
    # either tried to finish an item and lost the owner check (item_claim_lost) or stopped
    # first (declared dead); which comes first is timing, the outcome is not.
    done_by = {(r["item_id"], r["client_id"]) for r in await db.fetch_all(DONE_BY)}
    assert not {(i, c) for i, c in done_by if i in held and c in cut_clients}


async def _holds_items(db: Database, hostname: str) -> bool:
    mine = (await live_by_host(db)).get(hostname, set())
    return any(r["owner"] in mine for r in await db.fetch_all(OWNED))


async def _done_by_others(db: Database, items: set[int], cut: set[str]) -> bool:
    done = {r["item_id"]: r["client_id"] for r in await db.fetch_all(DONE_BY)}
    return all(i in done and done[i] not in cut for i in items)


async def scale_out(hosts: Hosts, dsn: str, db: Database, *, items: int, cuts: int) -> None:
    await add_items(db, items, 1200)
    start_hosts(hosts, dsn, per_host=2)
    names = {h.hostname for h in hosts.hosts}

    async def listed_on_host1() -> bool:
        out = ippctl_on(hosts, hosts.hosts[0], dsn, "clients", "list", "--json")
        return out.returncode == 0 and {c["host"] for c in json.loads(out.stdout)["clients"]} >= names

    await eventually(listed_on_host1, timeout_s=120, what="ippctl on host 1 listing all three hosts")
    hostname = hosts.run_on(hosts.hosts[1], "hostname")
    assert hostname.stdout.strip() == hosts.hosts[1].hostname
    await shared_volumes(hosts, dsn, db)
    await pause_one_host(hosts, dsn, db)
    total = items + PHASE_ITEMS
    for _ in range(cuts):
        await cut_off_and_return(hosts, dsn, db, more_items=12)
        total += PHASE_ITEMS + 12
    await eventually(lambda: all_done(db, total), timeout_s=300, what=f"all {total} items done")
    await check_done_once(db, total)


async def test_three_hosts_share_the_work_obey_host_flags_and_take_over_a_cut_off_host(hosts, cluster_db):
    dsn, db = cluster_db
    await scale_out(hosts, dsn, db, items=24, cuts=1)


@pytest.mark.cluster
@pytest.mark.timeout(1800)
async def test_long_scale_out_with_two_cuts_nothing_lost_or_done_twice(hosts, cluster_db):
    dsn, db = cluster_db
    await scale_out(hosts, dsn, db, items=150, cuts=2)


@pytest.mark.cluster
@pytest.mark.timeout(2400)
def test_the_demo_workload_on_three_galera_nodes_with_a_node_kill(tmp_path):
    """The whole demo (cleanup, update, distribution, loading, ODM, batch cleaning) with the
    agents spread over three Galera nodes, the fault campaign, and node 3 SIGKILLed and
    restarted; the same checks as ``ippctl demo --until-done``."""
    from tests.test_demo import demo_home, fault_campaign

    # The nodes run as the mysql user, which cannot enter pytest's private tmp_path.
    top = Path(tempfile.mkdtemp(prefix="ippgdemo-", dir="/tmp"))
    top.chmod(0o755)
    try:
        counts = fault_campaign(demo_home(top, "ipp_mirror"), 10, "--galera", "3")
        assert counts["galera_nodes"] == 3
        assert counts["faults"]["node_rejoin_s"] > 0
        print(json.dumps(counts["faults"]), "conflicts retried:", counts["conflicts_retried"])
    finally:
        shutil.rmtree(top, ignore_errors=True)
