"""A three-node MariaDB Galera cluster on loopback (shared/db/galera.py): the schema upgrade
runs once across nodes, claimers on different nodes never do an item twice (certification
conflicts, 1213, are counted and retried), and a node SIGKILLed mid-work rejoins with
nothing lost. The whole demo on the cluster is in tests/test_cluster.py (make test-cluster).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from shared.core.errors import ClaimLost, DbConflict, LocalDbError
from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database, Tx
from shared.db.galera import LocalGalera
from shared.db.queries import Query
from shared.db.schema import CODE_SCHEMA_VERSION, database_version
from shared.runtime.claims import Claimer
from sim import workload
from sim.workload import SPEC, W
from tests.helpers import ROOT, agent_env, run_ippctl

#: Ports apart from a developer's own ``ippctl db start-local --galera 3`` (3311..).
CLIENT_PORT_BASE = 3321
LOGGED = Query("t_logged", "SELECT item_id, COUNT(*) AS n FROM sim_work_log GROUP BY item_id", "test")
MIGRATIONS = Query("t_migrations", "SELECT COUNT(*) FROM schema_migration", "test")


@pytest.fixture(scope="module")
def galera() -> Iterator[LocalGalera]:
    base = Path("/tmp") / f"ippg-{secrets.token_hex(3)}"
    cluster = LocalGalera(base, 3, client_port_base=CLIENT_PORT_BASE)
    try:
        cluster.start()
    except LocalDbError as exc:
        cluster.stop(kill=True)
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot run a local Galera cluster here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop(kill=True)
        shutil.rmtree(base, ignore_errors=True)


def upgrade_on(dsn: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.ctl.main", "db", "upgrade"],
        cwd=ROOT,
        env=agent_env(dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_local_user_reaches_a_node_as_root_and_the_agents_use_their_own_password(galera):
    """Issue 33: the Galera nodes had a passwordless root on 127.0.0.1, so any local user was
    database root (and could write files as the server). Root now logs in by unix_socket
    only; the agents' account has one password for the cluster, kept 0600."""
    assert (galera.base / "client.password").stat().st_mode & 0o777 == 0o600
    for node in galera.nodes:
        with pytest.raises(pymysql.err.OperationalError) as refused:
            pymysql.connect(host="127.0.0.1", port=node.port, user="root", connect_timeout=5).close()
        assert refused.value.args[0] in (1045, 1130, 1698), refused.value
        dsn = parse_dsn(node.dsn("mysql"))
        assert dsn.user == "ipp" and dsn.password
        conn = pymysql.connect(
            host="127.0.0.1", port=node.port, user=dsn.user, password=dsn.password, connect_timeout=5
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@secure_file_priv")
                (priv,) = cur.fetchone()
        finally:
            conn.close()
        assert priv and Path(priv).resolve() == node.files.resolve(), priv


async def test_three_upgrades_at_once_on_three_nodes_apply_each_migration_once(galera):
    dsns = galera.dsns("ipp_upgrade_race")
    procs = [upgrade_on(dsn) for dsn in dsns]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    applied = [out for out, _ in outs if "-> " in out]
    assert len(applied) == 1, outs  # one did the work; the others found it done
    assert sum("another upgrade of" in err for _, err in outs) + sum("already at" in o for o, _ in outs) >= 2
    for dsn in dsns:  # every node holds the same schema
        db = await Database.connect(load_settings(db_dsn=dsn), sync_wait=1)
        try:
            assert await database_version(db) == CODE_SCHEMA_VERSION
            assert await db.fetch_val(MIGRATIONS) == CODE_SCHEMA_VERSION
        finally:
            await db.close()


async def _claimer(db: Database, stats: dict[str, int]) -> None:
    claims = Claimer(db, str(uuid.uuid4()))
    while True:
        try:
            rows = await claims.claim(SPEC, limit=1)
        except DbConflict:
            stats["gave_up"] += 1
            continue
        if not rows:
            stats["near"] += claims.claims_near_left(SPEC.table) is not None
            return
        item = rows[0]["item_id"]

        async def finish(tx: Tx, item: int = item) -> None:
            await tx.insert(W.work_log_insert, item_id=item, client_id=claims.owner)
            await claims.finish_in(tx, SPEC, W.work_finish, item)

        try:
            await db.transaction(finish, name="t_finish")
        except ClaimLost:
            stats["lost_replies"] += 1


async def test_claimers_on_three_nodes_never_do_an_item_twice_and_survive_a_node_kill(galera):
    dsns = galera.dsns("ipp_claims")
    admin_settings = load_settings(db_dsn=dsns[0])
    proc = upgrade_on(dsns[0])
    assert proc.wait(timeout=300) == 0, proc.communicate()
    admin = await Database.connect(admin_settings, sync_wait=1)
    items = 1500
    try:
        await workload.create_tables(admin)
        rows = [{"duration_ms": 0}] * items
        await admin.transaction(lambda tx: tx.execute_many(W.work_add, rows), name="t_add")
        pools = [
            await Database.connect(load_settings(db_dsn=dsns[i % 3], db_reconnect_max_s=180), pool_size=1)
            for i in range(6)
        ]
        stats = {"gave_up": 0, "lost_replies": 0, "near": 0}
        work = asyncio.gather(*(_claimer(db, stats) for db in pools))

        async def kill_and_restart() -> None:
            while len(await admin.fetch_all(LOGGED)) < items // 4:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(galera.kill_node, 3)
            await asyncio.to_thread(galera.start_node, 3)

        await asyncio.gather(work, kill_and_restart())
        conflicts = sum(db.stats.conflicts for db in pools)
        for db in pools:
            await db.close()
        logged = await admin.fetch_all(LOGGED)
        assert len(logged) == items  # none lost
        assert all(int(r["n"]) == 1 for r in logged)  # none done twice
        assert {r["state"]: int(r["n"]) for r in await admin.fetch_all(W.work_counts)} == {"done": items}
        # claimers whose claims conflicted went on claiming their own node's share first
        assert conflicts == 0 or stats["near"] > 0, (conflicts, stats)
        status = await asyncio.to_thread(galera.status)
        assert [s.state for s in status] == ["Synced"] * 3 and status[2].cluster_size == 3
        print(f"conflicts {conflicts} per {items} claims; given up {stats['gave_up']}")
    finally:
        await admin.close()


async def test_claimers_on_three_nodes_know_their_node_and_take_its_share_first(galera):
    """Node affinity (shared.runtime.claims): each node reports a different member index of
    the three, and a claimer near one takes the rows of its share (CRC32(id) MOD 3) before
    any other, then the rest; every row exactly once."""
    dsns = galera.dsns("ipp_affinity")
    proc = upgrade_on(dsns[0])
    assert proc.wait(timeout=300) == 0, proc.communicate()
    admin = await Database.connect(load_settings(db_dsn=dsns[0]), sync_wait=1)
    pools = [await Database.connect(load_settings(db_dsn=dsn), pool_size=1, sync_wait=1) for dsn in dsns]
    try:
        await workload.create_tables(admin)
        rows = [{"duration_ms": 0}] * 90
        await admin.transaction(lambda tx: tx.execute_many(W.work_add, rows), name="t_add")
        claimers = [Claimer(db, str(uuid.uuid4())) for db in pools]
        positions = [await c.position() for c in claimers]
        assert sorted(p.node for p in positions) == [0, 1, 2] and {p.nodes for p in positions} == {3}
        # the position as read, fixed (a claimer uses it by itself once its claims conflict)
        first = Claimer(pools[0], str(uuid.uuid4()), positions[0])
        share = positions[0].node
        taken = []
        while rows := await first.claim(SPEC, limit=2):
            for row in rows:
                taken.append(row["item_id"])
                await first.finish(SPEC, W.work_finish, row["item_id"])
        shares = [zlib.crc32(str(item).encode()) % 3 for item in taken]
        mine = shares.count(share)
        assert 0 < mine < len(taken) == 90 and shares[:mine] == [share] * mine
        assert sorted(taken) == sorted(set(taken))
    finally:
        for db in pools:
            await db.close()
        await admin.close()


async def test_node_3_reads_the_writes_just_made_on_node_1(galera):
    """A node's reads with wsrep_sync_wait=1 see what another node committed just before."""
    dsns = galera.dsns("ipp_causal")
    first = await Database.connect(load_settings(db_dsn=parse_dsn(dsns[0]).with_database("mysql").url()))
    third = await Database.connect(
        load_settings(db_dsn=parse_dsn(dsns[2]).with_database("mysql").url()), sync_wait=1
    )
    try:
        wsrep = await third.fetch_one(Query("t_sw", "SELECT @@wsrep_sync_wait AS w", "test"))
        assert wsrep == {"w": 1}
        await first.execute(Query("t_mk", "CREATE DATABASE IF NOT EXISTS ipp_causal", "test"))
        await first.execute(
            Query("t_tb", "CREATE TABLE IF NOT EXISTS ipp_causal.t (k INT PRIMARY KEY, v INT)", "test")
        )
        for value in range(50):
            await first.execute(Query("t_up", "REPLACE INTO ipp_causal.t VALUES (1, %(v)s)", "test"), v=value)
            seen = await third.fetch_val(Query("t_rd", "SELECT v FROM ipp_causal.t WHERE k = 1", "test"))
            assert seen == value
    finally:
        await first.close()
        await third.close()


def test_a_node_without_a_cluster_and_a_node_outside_it_are_refused():
    nowhere = "mysql://root@127.0.0.1:1/x"
    lone = run_ippctl(nowhere, "db", "start-local", "--node", "2")
    assert lone.returncode == 2
    assert "--node K names a node of the local Galera cluster: give --galera N too" in lone.stderr
    outside = run_ippctl(nowhere, "db", "stop-local", "--galera", "3", "--node", "4")
    assert outside.returncode == 2
    assert "--node 4: the cluster has nodes 1 to 3" in outside.stderr


async def test_the_upgrade_lease_of_a_dead_holder_runs_out_and_a_live_one_is_waited_for(galera):
    dsn = galera.dsns("ipp_lease")[1]
    first = upgrade_on(dsn)
    assert first.wait(timeout=300) == 0, first.communicate()
    db = await Database.connect(load_settings(db_dsn=dsn), sync_wait=1)
    hold = Query(
        "t_hold",
        "REPLACE INTO schema_upgrade_lock VALUES ('ipp_schema_upgrade.ipp_lease', %(holder)s, "
        "NOW(6) + INTERVAL %(s)s SECOND)",
        "test",
    )
    try:
        await db.execute(hold, holder="otherhost:1:live", s=3600)
        waited = run_ippctl(dsn, "db", "upgrade", db_upgrade_lock_wait_s=2)
        assert waited.returncode == 1
        assert "otherhost:1:live holds the lease of ipp_schema_upgrade.ipp_lease" in waited.stderr
        assert "no upgrade lock (ipp_schema_upgrade.ipp_lease) within 2 s" in waited.stderr
        await db.execute(hold, holder="deadhost:1:gone", s=-1)  # its lease ran out
        taken = upgrade_on(dsn)
        out, err = taken.communicate(timeout=120)
        assert taken.returncode == 0, err
        assert "already at schema version" in out
        assert await db.fetch_val(Query("t_left", "SELECT COUNT(*) FROM schema_upgrade_lock", "test")) == 0
    finally:
        await db.close()


def test_the_demo_points_program_k_at_node_k_mod_n_with_the_original_paths():
    from shared.ctl.demo import spread_over_nodes

    conf = (ROOT / "supervisord.conf").read_text()
    dsns = (
        "mysql://root@127.0.0.1:3311/ipp",
        "mysql://root@127.0.0.1:3312/ipp",
        "mysql://root@127.0.0.1:3313/ipp",
    )
    spread = spread_over_nodes(conf, ROOT, dsns)
    assert "%(here)s" not in spread and f"{ROOT}/logs/supervisord.log" in spread
    environments = [line for line in spread.splitlines() if line.startswith("environment=")]
    programs = [line for line in spread.splitlines() if line.startswith("[program:")]
    assert len(environments) == len(programs) > 3
    for k, line in enumerate(environments):
        assert line.endswith(f',IPP_DB_DSN="{dsns[k % 3]}"')
    # the mirror's client keeps its own database name beside the node
    assert any('IPP_DB_NAME="ipp_mirror",IPP_DB_DSN=' in line for line in environments)
