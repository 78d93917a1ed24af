"""A second site's database (the mirror of the distribution tests) and a free TCP port."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database
from shared.db.schema import create_database, drop_database, upgrade
from shared.storage.store import Storage
from tests.helpers import FAST
from tests.survey_fixture import sibling

_numbers = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mirror:
    dsn: str
    var_dir: Path
    db: Database


async def make_mirror(test_dsn: str, var_dir: Path) -> AsyncIterator[Mirror]:
    """A fresh site database beside the test database, with two storage volumes."""
    dsn = parse_dsn(sibling(test_dsn, f"mirror{next(_numbers)}"))
    settings = load_settings(environ={}, db_dsn=dsn.url(), var_dir=str(var_dir), **FAST)
    await create_database(settings, dsn)
    db = await Database.connect(settings, pool_size=4)
    await upgrade(db)
    for n in range(2):
        await Storage(db).add_volume(f"mirror.{n}", var_dir / "storage" / f"vol{n}")
    yield Mirror(dsn.url(), var_dir, db)
    await db.close()
    await drop_database(settings, dsn)


def unconfined(key: str, source: str = "ipp") -> str:
    """The key a file has at its source, from its key at the mirror, where it is confined
    under the source's own prefix (dist_confine_sources, on by default)."""
    scheme, _, rest = key.partition("://")
    volume, _, path = rest.partition("/")
    assert path.startswith(f"{source}/"), f"{key} is not under source {source}'s prefix"
    return f"{scheme}://{volume}/{path.removeprefix(source + '/')}"
