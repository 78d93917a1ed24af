"""What the demo made, so that it can start over: ``ippctl demo --reset``.

Before its first set-up the demo writes ``<var_dir>/demo-state.json`` naming the databases it
is about to create (the IPP site, the mirror and the PSPS stand-in's) - only those that did
not exist yet, so a reset never drops a database of another server that the demo did not
make. On the private local server (``var/mariadb``, the project's own) every demo database is
the demo's. A reset stops the
demo's supervisord (every agent finishes or hands back its item), drops those databases,
removes the demo's data under ``var_dir`` (storage volumes, DVO databases, PSPS batches,
staging and scratch, plots) and the state file. The private MariaDB itself (``var/mariadb``)
and the logs are kept.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shared.core.errors import IppError
from shared.core.settings import Dsn, Settings, parse_dsn
from shared.db.schema import database_exists, drop_database

STATE_FILE = "demo-state.json"


class DemoStateError(IppError):
    """The demo cannot start over: something it would have to remove is not its own."""


def demo_dsns(settings: Settings, mirror_db: str) -> list[Dsn]:
    """The demo's three databases: the IPP site, its mirror, the PSPS stand-in's."""
    ipp = parse_dsn(settings.effective_dsn())
    return [ipp, ipp.with_database(mirror_db), parse_dsn(settings.psps_effective_dsn())]


def local_server(settings: Settings) -> bool:
    """True when the IPP database is on the private local server under ``var_dir``."""
    return parse_dsn(settings.effective_dsn()).unix_socket == str(settings.local_socket())


def data_dirs(settings: Settings) -> list[Path]:
    """The directories the demo fills, as far as they lie under ``var_dir``."""
    var = Path(settings.var_dir).resolve()
    dirs = [
        var / "storage",
        var / "dvo",
        var / "psps",
        var / "dxlayer",
        settings.plot_dir(),
        settings.dist_staging(),
        settings.update_scratch(),
    ]
    return [d.resolve() for d in dirs if d.resolve().is_relative_to(var) and d.resolve() != var]


@dataclass
class DemoState:
    """The databases the demo created (by name); stored beside its data."""

    path: Path
    databases: list[str] = field(default_factory=list)

    @classmethod
    def at(cls, settings: Settings) -> Path:
        return Path(settings.var_dir) / STATE_FILE

    @classmethod
    def load(cls, settings: Settings) -> DemoState | None:
        path = cls.at(settings)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DemoStateError(f"{path}: not a demo state file ({exc}); remove it") from None
        names = data.get("databases") if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DemoStateError(f"{path}: no list of databases in it; remove it")
        return cls(path, names)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"databases": self.databases}, indent=2) + "\n")
        tmp.replace(self.path)


async def record(settings: Settings, mirror_db: str) -> DemoState:
    """Note which of the demo's databases it is about to create (before its set-up)."""
    state = DemoState.load(settings) or DemoState(DemoState.at(settings))
    for dsn in demo_dsns(settings, mirror_db):
        if dsn.database not in state.databases and not await database_exists(settings, dsn):
            state.databases.append(dsn.database)
    state.save()
    return state


async def reset(settings: Settings, mirror_db: str) -> list[str]:
    """Drop what the demo made (its agents must be stopped already); what was done, a line
    each. Refuses, naming it, when a database the demo uses is not one it created."""
    state = DemoState.load(settings)
    done: list[str] = []
    dsns = demo_dsns(settings, mirror_db)
    ours = set(state.databases) if state else set()
    ours |= {dsn.database for dsn in dsns if dsn.unix_socket == str(settings.local_socket())}
    for dsn in dsns:  # refuse before touching anything
        if dsn.database not in ours and await database_exists(settings, dsn):
            raise DemoStateError(
                f"database {dsn.display()} was not created by the demo, so it is not dropped; "
                "drop it yourself or point the demo at another name (IPP_DB_NAME, "
                "--mirror-db, IPP_PSPS_DB_NAME)"
            )
    for dsn in dsns:
        if dsn.database in ours:
            await drop_database(settings, dsn)
            done.append(f"dropped database {dsn.database} ({dsn.display()})")
    for directory in data_dirs(settings):
        if directory.exists():
            await asyncio.to_thread(shutil.rmtree, directory)
            done.append(f"removed {directory}")
    if state is not None:
        state.path.unlink(missing_ok=True)
    return done
