"""A private MariaDB Galera cluster on loopback: ``ippctl db start-local --galera N``.

Each node is a :class:`LocalMariaDB` under ``var/galera/nodeK`` with its own client port and
its own Galera ports (group communication, IST, SST), all bound to 127.0.0.1. The first node
to start when none runs bootstraps the cluster (``--wsrep-new-cluster``); the others join it
and get their data by state transfer (rsync SST, then IST after a restart). It exists to test
and measure the agents on a multi-writer cluster on one machine, not to run a site.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from shared.core.errors import LocalDbError
from shared.db.localdb import LocalMariaDB, ensure_server_installed
from shared.db.queries import Q

PROVIDER_PATHS = ("/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so")
INSTALL_COMMAND = "apt-get install -y galera-4 rsync"
CLUSTER_NAME = "ipp_local"
#: Client port of node 1; node K listens on CLIENT_PORT_BASE + K - 1.
CLIENT_PORT_BASE = 3311
#: Galera's own ports of node K: group communication, IST and SST receive, 10 apart per node.
GALERA_PORT_BASE = 14567
#: As root, nodes run as Debian's ``mysql`` user: the rsync daemon that receives a state
#: transfer drops root to ``nobody`` and could not write the joiner's files.
SYSTEM_USER = "mysql"
_SAFE = re.compile(r"^safe_to_bootstrap:\s*\d", re.MULTILINE)


def galera_provider(*, allow_install: bool = True) -> str:
    """Path of libgalera_smm.so; installs Debian's galera-4 and rsync when missing and root."""
    ensure_server_installed(allow_install=allow_install)
    for path in PROVIDER_PATHS:
        if Path(path).exists() and shutil.which("rsync"):
            return path
    if os.geteuid() != 0 or not allow_install:
        raise LocalDbError(
            f"the Galera provider or rsync is missing; install them with: sudo {INSTALL_COMMAND}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(["apt-get", "install", "-y", "galera-4", "rsync"], env=env, check=False)
    if result.returncode != 0:
        raise LocalDbError(f"'{INSTALL_COMMAND}' failed with exit code {result.returncode}")
    for path in PROVIDER_PATHS:
        if Path(path).exists():
            return path
    raise LocalDbError(f"galera-4 was installed but none of {', '.join(PROVIDER_PATHS)} exists")


@dataclass(frozen=True)
class NodeStatus:
    """One node as the cluster sees it (``wsrep_*`` status variables)."""

    name: str
    port: int
    running: bool
    state: str
    cluster_size: int


class LocalGalera:
    """N private mariadbd processes forming one Galera cluster on 127.0.0.1."""

    def __init__(self, base: Path, nodes: int = 3, *, client_port_base: int = CLIENT_PORT_BASE) -> None:
        if not 1 <= nodes <= 9:
            raise LocalDbError(f"a local Galera cluster has 1 to 9 nodes, not {nodes}")
        self.base = base.resolve()
        self.size = nodes
        self.client_port_base = client_port_base
        self.nodes = [self._node(k) for k in range(1, nodes + 1)]

    def _galera_ports(self, k: int) -> tuple[int, int, int]:
        base = GALERA_PORT_BASE + 10 * (k - 1) + 100 * (self.client_port_base - CLIENT_PORT_BASE)
        return base, base + 1, base + 2

    def _node(self, k: int) -> LocalMariaDB:
        group, ist, sst = self._galera_ports(k)
        members = ",".join(f"127.0.0.1:{self._galera_ports(j)[0]}" for j in range(1, self.size + 1))
        provider_options = (
            f"gmcast.listen_addr=tcp://127.0.0.1:{group};ist.recv_addr=127.0.0.1:{ist};"
            "gcache.size=128M;pc.wait_prim_timeout=PT60S"
        )
        wsrep = (
            "--wsrep-on=ON",
            f"--wsrep-provider={_provider_path()}",
            f"--wsrep-cluster-name={CLUSTER_NAME}",
            f"--wsrep-cluster-address=gcomm://{members}",
            f"--wsrep-node-name=node{k}",
            "--wsrep-node-address=127.0.0.1",
            f"--wsrep-provider-options={provider_options}",
            f"--wsrep-sst-receive-address=127.0.0.1:{sst}",
            "--wsrep-sst-method=rsync",
            "--binlog-format=ROW",
            "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2",
            "--log-bin-trust-function-creators=1",
            "--wsrep-slave-threads=2",
        )
        return LocalMariaDB(
            self.base / f"node{k}",
            port=self.client_port_base + k - 1,
            extra_args=wsrep,
            system_user=SYSTEM_USER,
            password_file=self.base / "client.password",
        )

    def node(self, k: int) -> LocalMariaDB:
        """Node K, counted from 1."""
        if not 1 <= k <= self.size:
            raise LocalDbError(f"node {k} is not in this {self.size}-node cluster")
        return self.nodes[k - 1]

    def dsns(self, database: str) -> list[str]:
        return [node.dsn(database) for node in self.nodes]

    # -- life cycle ----------------------------------------------------------------------

    def start(self, *, timeout_s: float = 180.0) -> list[int]:
        """Start every node that is not running; returns the numbers of those started.

        With no node running, node 1 bootstraps a new primary component (its grastate is
        marked safe first: this is a private test cluster, not a site's)."""
        galera_provider()
        self._check_reachable()
        started = []
        for k, node in enumerate(self.nodes, start=1):
            if node.pid() and node.answers():
                continue
            bootstrap = not any(other.pid() for other in self.nodes if other is not node)
            self.start_node(k, bootstrap=bootstrap, timeout_s=timeout_s)
            started.append(k)
        return started

    def _check_reachable(self) -> None:
        """As root the nodes run as ``mysql``, which must be able to reach their directory."""
        if os.geteuid() != 0:
            return
        for parent in [self.base, *self.base.parents]:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise LocalDbError(
                    f"the Galera nodes run as the {SYSTEM_USER} user, which cannot enter {parent} "
                    f"(mode {parent.stat().st_mode & 0o777:o}); use a var_dir others may traverse"
                )

    def start_node(self, k: int, *, bootstrap: bool = False, timeout_s: float = 180.0) -> None:
        """Start node K and wait until it is synced with the cluster."""
        node = self.node(k)
        args: tuple[str, ...] = ()
        if bootstrap:
            _mark_safe_to_bootstrap(node.datadir / "grastate.dat")
            args = ("--wsrep-new-cluster",)
        node.start(timeout_s=timeout_s, args=args)
        self.wait_synced(k, timeout_s=timeout_s)

    def stop(self, *, kill: bool = False) -> list[int]:
        """Stop every running node, the last one started last; returns those stopped."""
        stopped = []
        for k in range(self.size, 0, -1):
            if self.node(k).stop(kill=kill):
                stopped.append(k)
        return stopped

    def kill_node(self, k: int) -> None:
        """SIGKILL node K (a crash: the others carry on as a primary component)."""
        self.node(k).stop(kill=True)

    def wait_synced(self, k: int, *, timeout_s: float = 180.0) -> NodeStatus:
        deadline = time.monotonic() + timeout_s
        status = self.node_status(k)
        while time.monotonic() < deadline:
            status = self.node_status(k)
            if status.state == "Synced":
                return status
            time.sleep(0.2)
        raise LocalDbError(
            f"Galera node {k} is {status.state!r}, not Synced, after {timeout_s:g} s; "
            f"see {self.node(k).logfile}"
        )

    def node_status(self, k: int) -> NodeStatus:
        node = self.node(k)
        port = node.port or 0
        try:
            conn = node.connect()
        except pymysql.err.Error:
            return NodeStatus(f"node{k}", port, False, "down", 0)
        try:
            with conn.cursor() as cur:
                cur.execute(Q.wsrep_node_status.sql)
                values = {str(name): str(value) for name, value in cur.fetchall()}
        finally:
            conn.close()
        return NodeStatus(
            f"node{k}",
            port,
            True,
            values.get("wsrep_local_state_comment", "unknown"),
            int(values.get("wsrep_cluster_size", "0") or 0),
        )

    def status(self) -> list[NodeStatus]:
        return [self.node_status(k) for k in range(1, self.size + 1)]


def _provider_path() -> str:
    for path in PROVIDER_PATHS:
        if Path(path).exists():
            return path
    return PROVIDER_PATHS[0]


def _mark_safe_to_bootstrap(grastate: Path) -> None:
    """Let this node start a new primary component after the whole cluster went down."""
    try:
        text = grastate.read_text()
    except FileNotFoundError:
        return
    grastate.write_text(_SAFE.sub("safe_to_bootstrap: 1", text))
