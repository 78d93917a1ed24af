"""The embedded default database: a private mariadbd under ``var/`` on a unix socket.

Used when no ``IPP_DB_DSN`` is set, by ``make demo`` and ``make test``, and by tests that need
a server of their own to restart. It installs Debian's ``mariadb-server`` when the server
binary is missing and we are root; otherwise it says exactly what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from shared.core.errors import LocalDbError

SERVER_NAMES = ("mariadbd", "mysqld")
INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
INSTALL_COMMAND = "apt-get update && apt-get install -y mariadb-server"


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name, path=SEARCH_PATH)
        if found:
            return found
    return None


def ensure_server_installed(*, allow_install: bool = True) -> str:
    """Path of mariadbd; installs Debian's mariadb-server first when missing and root."""
    server = _which(SERVER_NAMES)
    if server:
        return server
    if os.geteuid() != 0 or not allow_install:
        raise LocalDbError(
            "mariadbd is not installed; install it with: sudo sh -c "
            f"'{INSTALL_COMMAND}'  (or set IPP_DB_DSN to an existing server)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "mariadb-server"]):
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            raise LocalDbError(f"'{' '.join(command)}' failed with exit code {result.returncode}")
    server = _which(SERVER_NAMES)
    if not server:
        raise LocalDbError("mariadb-server was installed but mariadbd is still not on the PATH")
    return server


@dataclass(frozen=True)
class LocalStatus:
    running: bool
    pid: int | None
    socket: Path
    datadir: Path
    version: str | None


class LocalMariaDB:
    """A private MariaDB server whose files all live under one directory."""

    def __init__(
        self,
        base: Path,
        *,
        port: int | None = None,
        bind_address: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
        system_user: str = "root",
    ) -> None:
        self.base = base.resolve()
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.pidfile = self.base / "mariadbd.pid"
        self.logfile = self.base / "mariadbd.log"
        self.port = port
        self.bind_address = bind_address
        self.extra_args = extra_args
        self.system_user = system_user
        if len(str(self.socket)) > 100:
            raise LocalDbError(
                f"socket path {self.socket} is longer than a unix socket allows; use a shorter var_dir"
            )

    # -- setup --------------------------------------------------------------------------

    def initialize(self) -> bool:
        """Create the data directory with an empty system schema; False if it exists."""
        if (self.datadir / "mysql").is_dir():
            return False
        ensure_server_installed()
        install_db = _which(INSTALL_DB_NAMES)
        if not install_db:
            raise LocalDbError("mariadb-install-db not found; reinstall mariadb-server")
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._hand_over_files()
        command = [
            install_db,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if os.geteuid() == 0:
            command.append(f"--user={self.system_user}")
        with open(self.logfile, "ab") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            shutil.rmtree(self.datadir, ignore_errors=True)
            raise LocalDbError(f"mariadb-install-db failed (exit {result.returncode}); see {self.logfile}")
        return True

    def _hand_over_files(self) -> None:
        """As root, give the directories made here to the system user the server runs as
        (what the server and mariadb-install-db create is theirs already)."""
        if os.geteuid() != 0 or self.system_user == "root":
            return
        for path in (self.base, self.datadir, self.logfile):
            if path.exists():
                shutil.chown(path, self.system_user, self.system_user)

    def _server_command(self, server: str) -> list[str]:
        command = [
            server,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.pidfile}",
            f"--log-error={self.logfile}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]
        if self.port is None:
            command.append("--skip-networking")
        else:
            command += [f"--bind-address={self.bind_address}", f"--port={self.port}"]
        if os.geteuid() == 0:
            command.append(f"--user={self.system_user}")
        return command + list(self.extra_args)

    # -- life cycle ----------------------------------------------------------------------

    def pid(self) -> int | None:
        """The server's pid if its pid file names a live process."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def answers(self) -> str | None:
        """The server version if it answers on its socket, else None."""
        if not self.socket.exists():
            return None
        try:
            conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2)
        except pymysql.err.Error:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                row = cur.fetchone()
                return str(row[0]) if row else None
        finally:
            conn.close()

    def start(self, *, timeout_s: float = 60.0, args: tuple[str, ...] = ()) -> bool:
        """Start the server (initialising it first), with ``args`` added to its command line
        for this start only; False if it was already running."""
        if self.pid() and self.answers():
            return False
        server = ensure_server_installed()
        self.base.mkdir(parents=True, exist_ok=True)
        self.initialize()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with open(self.logfile, "ab") as log:
            self._hand_over_files()
            proc = subprocess.Popen(
                self._server_command(server) + list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalDbError(
                    f"mariadbd exited with code {proc.returncode} while starting; "
                    f"last lines of {self.logfile}:\n{self._log_tail()}"
                )
            if self.answers():
                return True
            time.sleep(0.1)
        proc.kill()
        raise LocalDbError(f"mariadbd did not answer within {timeout_s}s; see {self.logfile}")

    def stop(self, *, timeout_s: float = 60.0, kill: bool = False) -> bool:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``); False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # Reap it if it is our own child (tests start servers from this process).
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        else:
            raise LocalDbError(f"mariadbd (pid {pid}) did not stop within {timeout_s}s")
        if kill:
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()
        return True

    def status(self) -> LocalStatus:
        pid = self.pid()
        version = self.answers() if pid else None
        return LocalStatus(
            running=bool(pid and version),
            pid=pid,
            socket=self.socket,
            datadir=self.datadir,
            version=version,
        )

    def dsn(self, database: str) -> str:
        if self.port is not None:
            return f"mysql://root@{self.bind_address}:{self.port}/{database}"
        return f"mysql://root@localhost/{database}?unix_socket={self.socket}"

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
