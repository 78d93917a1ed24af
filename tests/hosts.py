"""Several "hosts" on one machine: network namespaces with their own hostname, for the
scale-out tests (tests/test_cluster.py).

The harness makes, and afterwards removes, everything it uses:
- a bridge in the root namespace holding 198.18.N.1/24 (RFC 2544's range for testing
  networks, so no real network is addressed), with a MariaDB of its own bound to that
  address and nothing else;
- per host a network namespace (``ip netns``) joined to the bridge by a veth pair, with
  198.18.N.(10+k); inside it, a new UTS namespace (its own hostname) and mount namespace in
  which the shared storage directory is bind-mounted at the same path on every host, as NFS
  would be; and there the host's own supervisord, running the agents it was given.

Cutting a host off is ``ip link set <veth> down`` on the root side: its packets go nowhere
and its TCP connections stall, as with a pulled cable.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from shared.db.localdb import LocalMariaDB
from tests.helpers import BIN, FAST, ROOT

#: Names of the harness's links: short (Linux allows 15 characters) and unique per run.
PREFIX = "ipph"
DB_PORT = 3399
DB_USER = "ippcluster"


class HostsUnavailable(Exception):
    """Namespaces cannot be made here (the exact command and error say why)."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if check and result.returncode != 0:
        raise HostsUnavailable(f"'{' '.join(argv)}' failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_subnet() -> int:
    """A 198.18.N.0/24 that no route of this machine uses."""
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    taken = {int(part.split(".")[2]) for part in routes.split() if part.startswith("198.18.")}
    choices = [n for n in range(1, 255) if n not in taken]
    if not choices:
        raise HostsUnavailable("every 198.18.N.0/24 is routed already")
    return random.choice(choices)


@dataclass
class Program:
    """One supervisord program of a host: ``ipp-agent NAME ARGS`` (numprocs copies)."""

    name: str
    args: tuple[str, ...] = ()
    numprocs: int = 1
    module: str = "agents"


@dataclass
class Host:
    index: int
    hostname: str
    netns: str
    veth: str
    address: str
    home: Path
    programs: list[Program] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.home / "supervisord.conf"

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def logs(self) -> list[Path]:
        return sorted((self.home / "logs").glob("*.log"))

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs())


class Hosts:
    """N hosts and their database: :meth:`start_network`, :meth:`start_database` and
    :meth:`start_host` make them, :meth:`close` removes everything made."""

    def __init__(self, base: Path, count: int = 3, *, settings: Mapping[str, object] | None = None) -> None:
        self.base = base
        self.count = count
        self.token = secrets.token_hex(3)
        self.subnet = 0
        self.bridge = f"{PREFIX}b{self.token}"
        self.shared = base / "nfs"  # what the "NFS server" exports
        self.mountpoint = base / "mnt" / "storage"  # where every host sees it
        self.settings = {**FAST, **(settings or {})}
        self.db = LocalMariaDB(base / "db", port=DB_PORT)
        self.hosts: list[Host] = []
        self._made: list[tuple[str, ...]] = []  # undo commands, run in reverse

    # -- set-up -----------------------------------------------------------------------

    def start_network(self) -> None:
        if os.geteuid() != 0:
            raise HostsUnavailable("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            raise HostsUnavailable("'ip' (iproute2) or 'unshare' (util-linux) is not installed")
        self.subnet = _free_subnet()
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._made.append(("ip", "link", "del", self.bridge))
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for k in range(1, self.count + 1):
            self.hosts.append(self._make_host(k))

    @property
    def gateway(self) -> str:
        return f"198.18.{self.subnet}.1"

    def _make_host(self, k: int) -> Host:
        netns, veth = f"{PREFIX}{k}{self.token}", f"{PREFIX}v{k}{self.token}"
        host = Host(
            index=k,
            hostname=f"ipphost{k}",
            netns=netns,
            veth=veth,
            address=f"198.18.{self.subnet}.{10 + k}",
            home=self.base / f"host{k}",
        )
        sh("ip", "netns", "add", netns)
        self._made.append(("ip", "netns", "del", netns))
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self._made.append(("ip", "link", "del", veth))
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        return host

    def start_database(self) -> str:
        """The MariaDB every host reaches over the bridge; returns the DSN of ``database``."""
        self.db = LocalMariaDB(self.base / "db", port=DB_PORT, bind_address=self.gateway)
        self.db.start()
        conn = pymysql.connect(unix_socket=str(self.db.socket), user="root")
        try:
            with conn.cursor() as cur:
                pattern = f"198.18.{self.subnet}.%"
                cur.execute(f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{pattern}'")
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'{pattern}'")
        finally:
            conn.close()
        return self.dsn("ippcluster")

    def dsn(self, database: str) -> str:
        return f"mysql://{DB_USER}@{self.gateway}:{DB_PORT}/{database}"

    def start_host(self, host: Host, programs: list[Program], dsn: str) -> None:
        """Write the host's supervisord.conf and start supervisord in its namespaces."""
        host.programs = programs
        for sub in ("logs", "var"):
            (host.home / sub).mkdir(parents=True, exist_ok=True)
        self.shared.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        host.conf.write_text(self._conf(host, dsn))
        script = (
            f"hostname {host.hostname} && mount --bind {self.shared} {self.mountpoint} && "
            f"exec {BIN / 'supervisord'} -n -c {host.conf}"
        )
        enter = ["ip", "netns", "exec", host.netns, "unshare", "--uts", "--mount", "--propagation", "private"]
        host.proc = subprocess.Popen(
            [*enter, "sh", "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=open(host.home / "logs" / "namespace.err", "wb"),  # noqa: SIM115 - the child keeps it
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _conf(self, host: Host, dsn: str) -> str:
        env = {f"IPP_{k.upper()}": str(v) for k, v in self.settings.items()}
        env |= {
            "IPP_DB_DSN": dsn,
            "IPP_EXTRA_AGENTS": "workload=sim.workload",
            "IPP_VAR_DIR": str(host.home / "var"),
            "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        environment = ",".join(f'{k}="{v}"' for k, v in sorted(env.items()))
        lines = [
            "[unix_http_server]",
            f"file={host.home}/var/supervisor.sock",
            "[supervisord]",
            f"logfile={host.home}/logs/supervisord.log",
            f"pidfile={host.home}/var/supervisord.pid",
            f"childlogdir={host.home}/logs",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{host.home}/var/supervisor.sock",
        ]
        for program in host.programs:
            command = " ".join([sys.executable, "-m", program.module, program.name, *program.args])
            lines += [
                f"[program:{program.name}]",
                f"command=env --block-signal=TERM,INT {command}",
                f"directory={ROOT}",
                "process_name=%(program_name)s_%(process_num)02d",
                f"numprocs={program.numprocs}",
                "autorestart=unexpected",
                "exitcodes=0",
                "startsecs=1",
                "startretries=100",
                "stopwaitsecs=30",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={host.home}/logs/%(program_name)s_%(process_num)02d.log",
                f"environment={environment}",
            ]
        return "\n".join(lines) + "\n"

    # -- faults -----------------------------------------------------------------------

    def link_down(self, host: Host) -> None:
        sh("ip", "link", "set", host.veth, "down")

    def link_up(self, host: Host) -> None:
        sh("ip", "link", "set", host.veth, "up")

    def run_on(
        self, host: Host, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespaces (network, hostname and mounts), as an
        operator logged in on that host would."""
        assert host.proc is not None
        pid = _supervisord_pid(host)
        return subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "-u", "-m", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )

    # -- tear-down --------------------------------------------------------------------

    def close(self) -> None:
        for host in self.hosts:
            self._stop_host(host)
        with contextlib.suppress(Exception):
            self.db.stop()
        for undo in reversed(self._made):
            sh(*undo, check=False)
        self._made.clear()

    def _stop_host(self, host: Host) -> None:
        if host.proc is None or host.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(host.proc.pid, signal.SIGTERM)
        try:
            host.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.proc.pid, signal.SIGKILL)
            host.proc.wait(timeout=30)


def _supervisord_pid(host: Host) -> int:
    """The pid of the host's supervisord (the namespaced shell exec'd into it)."""
    deadline = time.monotonic() + 30
    pidfile = host.home / "var" / "supervisord.pid"
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().strip())
        time.sleep(0.1)
    raise HostsUnavailable(f"supervisord of {host.hostname} wrote no pid file ({pidfile})")
