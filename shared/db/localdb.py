"""The embedded default database: a private mariadbd under ``var/`` on a unix socket.

Used when no ``IPP_DB_DSN`` is set, by ``make demo`` and ``make test``, and by tests that need
a server of their own to restart. It installs Debian's ``mariadb-server`` when the server
binary is missing and we are root; otherwise it says exactly what to install.

No other local user may reach it (issue 33). Started by root, it runs as the ``mysql``
user, so nothing it writes is root's. Its directory, and so its socket, is open to its owner
and the starting user's group only (0750). Its ``root`` account logs in only as the
operating system's root (unix_socket authentication). The agents use an account of their own
(``ipp``), whose password is kept in ``client.password`` (0600) beside the socket. It reads
and writes files only inside its own ``files/`` directory (secure_file_priv). The nodes of a
local Galera cluster (shared.db.galera) listen on 127.0.0.1 and are protected the same way:
root by unix_socket only, the ``ipp`` account (on the socket and on 127.0.0.1) with one
password file for the whole cluster, as the account replicates to every node.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from shared.core.errors import LocalDbError

SERVER_NAMES = ("mariadbd", "mysqld")
INSTALL_DB_NAMES = ("mariadb-install-db", "mysql_install_db")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
INSTALL_COMMAND = "apt-get update && apt-get install -y mariadb-server"
#: The agents' account on the private server.
ACCOUNT = "ipp"


def _default_system_user() -> str:
    """``mysql`` when started by root (Debian's mariadb-server makes that user), else the
    user who starts it."""
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        return "root"
    return "mysql"


def read_client_password(path: Path) -> str | None:
    """The agents' password of a private server, if it has one yet."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


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
        system_user: str | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.base = base.resolve()
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.pidfile = self.base / "mariadbd.pid"
        self.logfile = self.base / "mariadbd.log"
        self.password_file = password_file or self.base / "client.password"
        self.files = self.base / "files"
        self.port = port
        self.bind_address = bind_address
        self.extra_args = extra_args
        self.system_user = system_user or _default_system_user()
        #: protected: the socket-only server, and a TCP server given a password file (the
        #: Galera nodes); other TCP servers (the test hosts' database, in namespaces of
        #: their own) keep the passwordless root they are reached with
        self.protected = port is None or password_file is not None
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
            "--auth-root-authentication-method=" + ("socket" if self.protected else "normal"),
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
        (what the server and mariadb-install-db create is theirs already). The directory
        holding the socket is its owner's and the starting user's group's only."""
        if self.protected:
            self.files.mkdir(parents=True, exist_ok=True)
            self.base.chmod(0o750)
            self.files.chmod(0o700)
        if os.geteuid() != 0 or self.system_user == "root":
            return
        self._check_reachable()
        for path in (self.base, self.datadir, self.logfile, self.files):
            if path.exists():
                shutil.chown(path, self.system_user, os.getgid() if path == self.base else self.system_user)
        system = self.datadir / "mysql"
        if system.is_dir() and system.stat().st_uid != pwd.getpwnam(self.system_user).pw_uid:
            # made by an earlier version, which ran the server as root: handed over once
            for root, dirs, files in os.walk(self.datadir):
                for name in dirs + files:
                    shutil.chown(os.path.join(root, name), self.system_user, self.system_user)

    def _check_reachable(self) -> None:
        """The system user must be able to reach its directory."""
        for parent in self.base.parents:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise LocalDbError(
                    f"the database server runs as the {self.system_user} user, which cannot enter "
                    f"{parent} (mode {parent.stat().st_mode & 0o777:o}); use a var_dir others may traverse"
                )

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
        if self.protected:
            command.append(f"--secure-file-priv={self.files}")
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
            conn = self.connect()
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
            if self.protected:
                self._ensure_account()
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
                if self.protected:
                    self._ensure_account()
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
        password = read_client_password(self.password_file) if self.protected else None
        who = f"{ACCOUNT}:{password}" if password else "root"
        if self.port is not None:
            return f"mysql://{who}@{self.bind_address}:{self.port}/{database}"
        return f"mysql://{who}@localhost/{database}?unix_socket={self.socket}"

    # -- who may log in ----------------------------------------------------------------

    def connect(self) -> Any:
        """A connection on the socket: the agents' account once it exists, else the server's
        own administrator: root, or the user it runs as when it was not started by root
        (unix_socket), or, on a server made by an earlier version, root without a password."""
        password = read_client_password(self.password_file) if self.protected else None
        if password:
            with contextlib.suppress(pymysql.err.OperationalError):
                return pymysql.connect(
                    unix_socket=str(self.socket), user=ACCOUNT, password=password, connect_timeout=2
                )
        return self._admin()[0]

    def _admin(self) -> tuple[Any, str]:
        """A connection as the server's administrator, and that account's name."""
        if os.geteuid() == 0 or not self.protected:
            return pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=5), "root"
        try:
            user = getpass.getuser()
            return pymysql.connect(unix_socket=str(self.socket), user=user, connect_timeout=5), user
        except pymysql.err.OperationalError:  # made by an earlier version: root, no password
            return pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=5), "root"

    def _ensure_account(self) -> None:
        """The agents' account with a password of its own (made once, kept 0600), root
        reachable only by the operating system's root, no anonymous accounts."""
        password = read_client_password(self.password_file)
        if password:
            try:
                pymysql.connect(unix_socket=str(self.socket), user=ACCOUNT, password=password).close()
                return
            except pymysql.err.OperationalError:
                pass  # the file outlived its server's data: make the account again
        password = secrets.token_hex(24)
        conn, admin = self._admin()
        hosts = ("localhost",) if self.port is None else ("localhost", "127.0.0.1")
        try:
            with conn.cursor() as cur:
                for host in hosts:  # account names and a password of hex digits: no quoting can be broken
                    cur.execute(f"CREATE OR REPLACE USER '{ACCOUNT}'@'{host}' IDENTIFIED BY %s", (password,))
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{ACCOUNT}'@'{host}' WITH GRANT OPTION")
                cur.execute("DROP USER IF EXISTS ''@'localhost'")
                if admin == "root":  # a server made by an earlier version: root had no password
                    cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket")
                    for host in ("127.0.0.1", "::1", socket.gethostname()):
                        cur.execute("DROP USER IF EXISTS 'root'@%s", (host,))
        finally:
            conn.close()
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
