"""One typed settings object for every program of the project.

Values come, in increasing precedence, from the defaults below, the TOML file named by
``IPP_SETTINGS`` (if set), and environment variables ``IPP_<NAME>`` (upper case). Nothing else
in the code reads the environment or a config file: programs load :class:`Settings` once and
pass it down.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from shared.core.errors import DsnError, SettingsError

#: The checkout (or install) directory: ``var/`` and ``logs/`` default to live beside it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_var_dir() -> str:
    return str(PROJECT_ROOT / "var")


@dataclass(frozen=True)
class Settings:
    """Every tunable of the system, with units in the names."""

    # Database. An empty DSN means the private local MariaDB under var_dir.
    db_dsn: str = ""
    db_pool_size: int = 4
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_s: float = 30.0
    db_reconnect_max_s: float = 60.0
    db_retry_attempts: int = 5
    db_backoff_base_s: float = 0.05
    db_backoff_max_s: float = 5.0
    # Galera: wsrep_sync_wait of the agents' sessions (0: reads see what this node has
    # applied; 1: reads wait for the cluster's earlier commits). ippctl always uses 1.
    db_sync_wait: int = 0
    # How long `ippctl db upgrade` waits for another upgrade of the same database to end.
    db_upgrade_lock_wait_s: float = 3600.0

    # The ippToPsps database (seed 003: "the ippToPsps database, which keeps track of which
    # batches have been processed, published to PSPS etc."): the PSPS loading side's configs,
    # queue, batches and metrics, and the clients and flags of its agents (loader, odm_poller,
    # batch_cleaner, metrics). Empty: those tables live in the processing database. When set,
    # the loading side reads the processing database on read-only sessions and writes there
    # only its DataStore publication (docs/operations.md, "The ippToPsps database").
    ipptopsps_dsn: str = ""

    # The database on that server, overriding the DSN's (a second site on one server, such
    # as the demo's mirror ipp_mirror); empty: the DSN's, or local_db_name for the local one.
    db_name: str = ""

    # Local files.
    var_dir: str = field(default_factory=_default_var_dir)
    local_db_name: str = "ipp"

    # Agent runtime.
    heartbeat_interval_s: float = 5.0
    heartbeat_grace_s: float = 20.0
    client_stale_s: float = 60.0
    sweep_interval_s: float = 30.0
    poll_interval_s: float = 5.0
    error_backoff_max_s: float = 60.0
    drain_timeout_s: float = 20.0
    client_retention_days: float = 7.0

    # Cleanup agent: runs cleaned at once by one process (overlaps database and disk waits).
    cleanup_parallel_runs: int = 8
    # gzip level of the logs cleanup compresses (ISA-L levels 0-3; 2 keeps about the seed's
    # 91 % on a 500 KB log at under 1 ms of CPU).
    cleanup_log_gzip_level: int = 2
    # Runs with this label are cleaned in a second pass: every component, not only full ones.
    cleanup_second_pass_label: str = "second_pass"

    # Update agent: the program that regenerates each stage (empty = the reference processor,
    # ``<python> -m sim.regen``); it gets the job file as its last argument (docs/formats.md).
    update_command_chip: str = ""
    update_command_warp: str = ""
    update_command_stack: str = ""
    update_command_diff: str = ""
    # A processor run longer than this is killed and the update marked failed.
    update_timeout_s: float = 1800.0
    # How long a run waits before it is looked at again when its inputs are not ready yet (or
    # a volume it needs is down); doubled per attempt up to 8 times this.
    update_wait_s: float = 30.0
    # Where jobs and their outputs are staged before they are moved into storage.
    update_scratch_dir: str = ""

    # Every HTTP server (DataStore, status page, console, PSPS stand-in): connections at once,
    # the time a client has to send its first request head, then its request body, and how
    # long an idle connection is kept.
    http_max_connections: int = 512
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0
    http_keepalive_timeout_s: float = 15.0

    # DataStore and distribution. The DataStore is served by dist_server on ds_host:ds_port;
    # with ds_token every request must carry it (Authorization: Bearer). A mirror sends each
    # source its own token (ippctl dist source token); the PSPS stand-in's DXLayer sends
    # dxlayer_ds_token to the one DataStore it polls.
    ds_host: str = "127.0.0.1"
    ds_port: int = 8081
    ds_token: str = ""
    dxlayer_ds_token: str = ""
    # gzip level of distribution bundles (ISA-L levels 0-3; 1 is fast and still compresses).
    dist_gzip_level: int = 1
    # Bundles built (server) or files downloaded (client) at once.
    dist_parallel: int = 4
    # Where bundles are built and downloads staged (empty: <var_dir>/dist).
    dist_staging_dir: str = ""
    # A DataStore request that takes longer than this fails (a hung server).
    dist_http_timeout_s: float = 60.0
    # The volume preference the mirror gives imported keys (neb://<this>/...).
    dist_mirror_volume: str = "any"
    # Keys of each source under a prefix of its own (neb://<volume>/<source>/<path>), so no
    # source can name another's files, nor a file of this site's own runs. On by default: a
    # source that imports first must not plant files under a legitimate run's names.
    dist_confine_sources: bool = True
    # A source with this many failed filesets is held: its failed ones are still retried, but
    # no new fileset of it is taken (a hostile listing cannot fill rcDSFileset without bound).
    dist_failed_max_per_source: int = 1000
    # What a mirror takes from a peer at most: a listing's bytes; members and unpacked bytes
    # of one bundle (the bytes as a ratio to the bundle's listed size, at least the floor);
    # free space left on the staging file system; sources polled at once; the slowest
    # download rate before a download's deadline (dist_http_timeout_s + bytes / rate) passes.
    dist_listing_max_bytes: int = 16 * 1024 * 1024
    dist_bundle_max_members: int = 1000
    dist_unpack_ratio_max: float = 100.0
    dist_unpack_floor_bytes: int = 64 * 1024 * 1024
    dist_staging_reserve_bytes: int = 1024 * 1024 * 1024
    dist_parallel_sources: int = 4
    dist_min_rate_bytes_s: float = 256 * 1024
    # A fileset that failed is tried again after this long, doubled per attempt up to the cap.
    dist_retry_s: float = 300.0
    dist_retry_max_s: float = 21600.0

    # PSPS. The ODM web service of the PSPS side (the stand-in ``ipp-sim psps`` serves it on
    # odm_host:odm_port; agents reach it at odm_url, empty = http://odm_host:odm_port).
    odm_host: str = "127.0.0.1"
    odm_port: int = 8082
    odm_url: str = ""
    # An ODM request that takes longer than this fails (retried on a later pass).
    odm_timeout_s: float = 10.0
    # Status checks or deletions the poller and batch cleaner have in flight at once.
    odm_parallel: int = 8
    # A published batch the ODM still does not know after this long is failed and requeued.
    odm_unknown_timeout_s: float = 86400.0
    # Times an item is built and published before a failure is final.
    psps_max_attempts: int = 3
    # The most a loader's DVO cache holds (bytes): whole regions while they fit, else a dense
    # field's measurements are read by rows (2 GiB suits a 24 GB host with several loaders).
    dvo_cache_max_bytes: int = 2 << 30
    # A deletion that failed (ODM down, volume down) is tried again after this long.
    batch_retry_s: float = 300.0
    # The PSPS stand-in's database (empty = psps_db_name on the local server), which the demo
    # reads to check what PSPS holds; the stand-in's own knobs are its section of the settings
    # (sim/settings.py).
    psps_dsn: str = ""
    psps_db_name: str = "psps"
    # The token the batch cleaner sends to PSPS with a deletion (Authorization: Bearer).
    odm_token: str = ""

    # Metrics agent: the read-only status page and /metrics (Prometheus text) on
    # metrics_host:metrics_port, a sample of every count per metrics_interval_s kept for
    # metrics_retention_days, and plots written to metrics_plot_dir (empty: <var_dir>/plots).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8083
    metrics_interval_s: float = 300.0
    metrics_retention_days: float = 30.0
    metrics_plot_dir: str = ""
    # The czartool database (a DSN; empty: none) the metrics agent also writes each sample's
    # loading summary into, as time series per config and batch type (seed 003).
    czartool_dsn: str = ""

    # The operators' console (ipp-agent console): where it listens (loopback: reach it through
    # an SSH tunnel), how long a login lasts, and whether its cookie is sent only over HTTPS
    # (set when it sits behind a TLS proxy).
    console_host: str = "127.0.0.1"
    console_port: int = 8084
    console_session_hours: float = 12.0
    console_secure_cookie: bool = False
    # Login attempts per window, counted before the password is checked (in the database,
    # shared by every console process): per address and user, per user, per address.
    console_login_window_s: float = 60.0
    console_login_max_per_user_address: int = 5
    console_login_max_per_user: int = 20
    console_login_max_per_address: int = 50

    # Agents: extra "name=module" pairs (comma separated) beside the built-in ones, so a site
    # can plug in its own agent modules.
    extra_agents: str = ""

    # Logging.
    log_format: str = "auto"
    log_level: str = "info"
    # Where an agent run by hand writes its log file, named as seed 003's are
    # (<agent>_<config>_<host>_<pid>.log); empty: none. Under supervisord or systemd (which
    # keep stdout) only ``--log-dir`` writes one.
    log_dir: str = field(default_factory=lambda: str(PROJECT_ROOT / "logs"))

    def update_command(self, stage: str) -> list[str]:
        """The argv (without the job file) of the program that regenerates ``stage``."""
        text = str(getattr(self, f"update_command_{stage}", "") or "")
        return shlex.split(text) if text.strip() else [sys.executable, "-m", "sim.regen"]

    def odm_base_url(self) -> str:
        return (self.odm_url or f"http://{self.odm_host}:{self.odm_port}").rstrip("/")

    def psps_effective_dsn(self) -> str:
        """The stand-in's database: ``psps_dsn``, or ``psps_db_name`` beside the IPP one."""
        if self.psps_dsn:
            return self.psps_dsn
        return parse_dsn(self.effective_dsn()).with_database(self.psps_db_name).url()

    def plot_dir(self) -> Path:
        return Path(self.metrics_plot_dir or Path(self.var_dir) / "plots")

    def dist_staging(self) -> Path:
        return Path(self.dist_staging_dir or Path(self.var_dir) / "dist")

    def update_scratch(self) -> Path:
        return Path(self.update_scratch_dir or Path(self.var_dir) / "update")

    def local_socket(self) -> Path:
        """The unix socket of the private local MariaDB."""
        return Path(self.var_dir) / "mariadb" / "mysqld.sock"

    def effective_dsn(self) -> str:
        """The DSN to use: ``db_dsn``, or the private local server's socket DSN."""
        if self.db_dsn:
            return parse_dsn(self.db_dsn).with_database(self.db_name).url() if self.db_name else self.db_dsn
        name = self.db_name or self.local_db_name
        # the private server's own account for the agents (ippctl db start-local makes it)
        try:
            password = (self.local_socket().parent / "client.password").read_text().strip()
        except OSError:
            password = ""
        who = f"ipp:{password}" if password else "root"
        return f"mysql://{who}@localhost/{name}?unix_socket={self.local_socket()}"

    def ipptopsps_separate(self) -> bool:
        """Whether the loading side has a database of its own (``ipptopsps_dsn``)."""
        return bool(self.ipptopsps_dsn)

    def ipptopsps_effective_dsn(self) -> str:
        """The ippToPsps database: ``ipptopsps_dsn``, or the processing database."""
        return self.ipptopsps_dsn or self.effective_dsn()

    def validate(self) -> None:
        """Reject values that cannot work, naming the setting."""
        positive = [
            "db_pool_size",
            "db_connect_timeout_s",
            "db_statement_timeout_s",
            "db_upgrade_lock_wait_s",
            "db_retry_attempts",
            "heartbeat_interval_s",
            "heartbeat_grace_s",
            "client_stale_s",
            "sweep_interval_s",
            "poll_interval_s",
            "drain_timeout_s",
            "cleanup_parallel_runs",
            "update_timeout_s",
            "ds_port",
            "dist_parallel",
            "dist_http_timeout_s",
            "dist_listing_max_bytes",
            "dist_bundle_max_members",
            "dist_unpack_ratio_max",
            "dist_parallel_sources",
            "dist_min_rate_bytes_s",
            "dist_retry_s",
            "dist_retry_max_s",
            "http_max_connections",
            "http_header_timeout_s",
            "http_body_timeout_s",
            "http_keepalive_timeout_s",
            "dist_failed_max_per_source",
            "odm_port",
            "odm_timeout_s",
            "odm_parallel",
            "odm_unknown_timeout_s",
            "psps_max_attempts",
            "dvo_cache_max_bytes",
            "metrics_port",
            "console_port",
            "console_session_hours",
            "console_login_window_s",
            "console_login_max_per_user_address",
            "console_login_max_per_user",
            "console_login_max_per_address",
            "metrics_interval_s",
            "metrics_retention_days",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"setting {name} must be > 0, got {getattr(self, name)!r}")
        if self.heartbeat_grace_s >= self.client_stale_s:
            raise SettingsError(
                f"setting heartbeat_grace_s ({self.heartbeat_grace_s}) must be below "
                f"client_stale_s ({self.client_stale_s}), or a silent agent would keep working "
                "after the sweeper released its claims"
            )
        for level in ("dist_gzip_level", "cleanup_log_gzip_level"):
            if not 0 <= getattr(self, level) <= 3:
                raise SettingsError(f"setting {level} must be 0..3, got {getattr(self, level)!r}")
        for port in ("ds_port", "odm_port", "metrics_port"):
            if getattr(self, port) > 65535:
                raise SettingsError(f"setting {port} must be a TCP port, got {getattr(self, port)!r}")
        if not 0 <= self.db_sync_wait <= 15:
            raise SettingsError(
                f"setting db_sync_wait must be 0..15 (wsrep_sync_wait bits), got {self.db_sync_wait!r}"
            )
        if self.batch_retry_s < 0:
            raise SettingsError(f"setting batch_retry_s must be >= 0, got {self.batch_retry_s!r}")
        if self.update_wait_s < 0:
            raise SettingsError(f"setting update_wait_s must be >= 0, got {self.update_wait_s!r}")
        for stage in ("chip", "warp", "stack", "diff"):
            try:
                self.update_command(stage)
            except ValueError as exc:
                raise SettingsError(f"setting update_command_{stage}: {exc}") from None
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(f"setting log_format must be auto, json or console, got {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError(f"setting log_level: unknown level {self.log_level!r}")
        for name in ("db_dsn", "psps_dsn", "ipptopsps_dsn"):
            if getattr(self, name):
                try:
                    parse_dsn(getattr(self, name))
                except DsnError as exc:
                    raise DsnError(f"setting {name}: {exc}") from None


def _convert(name: str, kind: Any, raw: Any, source: str) -> Any:
    """Convert ``raw`` to the field's type, or raise a SettingsError naming the source."""
    try:
        if kind is bool or kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is int or kind == "int":
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            return int(raw)
        if kind is float or kind == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return float(raw)
        return str(raw)
    except ValueError as exc:
        raise SettingsError(f"{source}: cannot use {raw!r} for setting {name}: {exc}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the ``IPP_SETTINGS`` TOML file and ``IPP_*``."""
    settings = load_section(Settings, None, environ, overrides)
    settings.validate()
    return settings


#: Tables of the settings file owned by other programs (the stand-ins' ``[stand_ins]``).
SECTIONS = ("stand_ins",)

T = TypeVar("T")


#: Settings that are gone, with what replaces them: named when they are still given.
RETIRED = {
    "dist_client_token": "it was sent to every source a mirror polls; give each source its own "
    "with `ippctl dist source token NAME --token-file F` (docs/operations.md)",
}


#: Settings that hold a secret (a DSN only when it has a password).
SECRET_SETTINGS = ("db_dsn", "ipptopsps_dsn", "ds_token", "dxlayer_ds_token", "odm_token")
_DSN_SETTINGS = ("db_dsn", "ipptopsps_dsn")


def _has_password(dsn: str) -> bool:
    """Whether a DSN holds a password (``user:password@``), found as _mask finds it, without
    parsing (a malformed DSN is refused later, naming the setting)."""
    credentials, at, _ = dsn.partition("://")[2].rpartition("@")
    return bool(at) and ":" in credentials


def _refuse_readable_secrets(path: str, table: Mapping[str, Any]) -> None:
    """A settings file that holds a secret must not be readable by every user."""
    held = [k for k in SECRET_SETTINGS if isinstance(table.get(k), str) and table[k]]
    for name in _DSN_SETTINGS:
        if name in held and not _has_password(table[name]):
            held.remove(name)
    if not held:
        return
    mode = os.stat(path).st_mode
    if mode & stat.S_IROTH:
        raise SettingsError(
            f"IPP_SETTINGS={path} holds {', '.join(held)} and every user can read it "
            f"(mode {stat.filemode(mode)}): chmod 600 it (docs/operations.md, Secrets)"
        )


def _refuse_retired(given: set[str], where: str) -> None:
    for key in sorted(given & set(RETIRED)):
        raise SettingsError(f"{where}: setting {key} is no longer used: {RETIRED[key]}")


def load_section(
    cls: type[T], section: str | None, environ: Mapping[str, str] | None, overrides: Mapping[str, Any]
) -> T:
    """A frozen settings dataclass from its defaults, the ``IPP_SETTINGS`` TOML file (its top
    level, or the table ``section``) and ``IPP_<NAME>`` variables, in that order."""
    env = os.environ if environ is None else environ
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    path = env.get("IPP_SETTINGS")
    if path:
        data = _read_toml(path)
        table = data.get(section, {}) if section else {k: v for k, v in data.items() if k not in SECTIONS}
        where = f"{path} [{section}]" if section else path
        if not isinstance(table, dict):
            raise SettingsError(f"{where}: not a table")
        _refuse_retired(set(table), where)
        _refuse_readable_secrets(path, table)
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise SettingsError(f"{where}: unknown setting(s): {', '.join(unknown)}")
        for key, raw in table.items():
            values[key] = _convert(key, known[key].type, raw, path)
    _refuse_retired({k for k in RETIRED if f"IPP_{k.upper()}" in env}, "environment")
    for key, f in known.items():
        env_name = f"IPP_{key.upper()}"
        if env_name in env:
            values[key] = _convert(key, f.type, env[env_name], env_name)
    for key, raw in overrides.items():
        if key not in known:
            raise SettingsError(f"unknown setting {key}")
        values[key] = raw
    return cls(**values)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"IPP_SETTINGS={path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"IPP_SETTINGS={path}: not valid TOML: {exc}") from None


@dataclass(frozen=True)
class Dsn:
    """A parsed ``mysql://user:password@host:port/database?unix_socket=/path`` DSN."""

    user: str
    password: str
    host: str
    port: int
    database: str
    unix_socket: str | None = None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiomysql / PyMySQL ``connect``."""
        kwargs: dict[str, Any] = {"user": self.user, "password": self.password, "db": self.database}
        if self.unix_socket:
            kwargs["unix_socket"] = self.unix_socket
        else:
            kwargs["host"] = self.host
            kwargs["port"] = self.port
        return kwargs

    def with_database(self, database: str) -> Dsn:
        """The same server and account, another database."""
        return dataclasses.replace(self, database=database)

    def url(self) -> str:
        """Back to the ``mysql://`` form (password included), every part percent-encoded so
        that it parses back to the same values whatever characters they hold."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        query = f"?unix_socket={quote(self.unix_socket, safe='/')}" if self.unix_socket else ""
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}{query}"

    def display(self) -> str:
        """A form safe to print: the password is masked."""
        where = f"socket {self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}"


def _mask(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, found by its place (between the
    first ``:`` after ``scheme://`` and the last ``@``), not by parsing: a password with an
    unencoded ``/``, ``#`` or ``?`` does not parse, and must not be shown either."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return dsn
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{place}"


def parse_dsn(dsn: str) -> Dsn:
    """Parse a ``mysql://`` DSN, raising DsnError that names the problem."""
    shown = _mask(dsn)
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError:
        # urllib's reason quotes what it took for a port: the start of a password that holds
        # '#', '?' or '/', which end the host part unless percent-encoded
        raise DsnError(
            f"database DSN {shown!r} is malformed: the part after the host is not a port number "
            "(a password with '#', '?' or '/' must be percent-encoded: %23, %3F, %2F)"
        ) from None
    if parts.scheme not in ("mysql", "mariadb"):
        raise DsnError(
            f"database DSN {shown!r}: scheme must be mysql:// or mariadb://, "
            f"got {parts.scheme + '://' if parts.scheme else 'none'}"
        )
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise DsnError(f"database DSN {shown!r}: names no database (mysql://user@host/DATABASE)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"unix_socket"})
    if unknown:
        raise DsnError(f"database DSN {shown!r}: unknown option(s) {', '.join(unknown)}")
    socket = query.get("unix_socket", [None])[0]
    if not parts.hostname and not socket:
        raise DsnError(f"database DSN {shown!r}: names no host and no unix_socket")
    return Dsn(
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        host=parts.hostname or "localhost",
        port=port,
        database=database,
        unix_socket=socket or None,
    )
