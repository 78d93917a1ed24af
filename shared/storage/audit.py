"""What an audit of the volumes finds, and its helpers (temporaries, walking a root)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{12}\Z")


@dataclass
class AuditReport:
    """What :meth:`Storage.audit` found on the volumes that are up."""

    files: int = 0
    #: registered instances whose file is missing (rows without files)
    missing: list[str] = field(default_factory=list)
    #: files under a volume root that no instance names (files without rows)
    orphans: list[str] = field(default_factory=list)
    #: temporary files (``.<name>.tmp-<hex>``) a writer that was killed left behind
    temporaries: list[str] = field(default_factory=list)
    #: objects with no instance at all
    empty_objects: list[str] = field(default_factory=list)
    #: temporaries deleted because nobody had written to them for long enough
    temporaries_removed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.orphans or self.empty_objects)


def remove_older_than(files: list[tuple[Path, str]], age_s: float) -> list[str]:
    """Unlink the files last modified more than ``age_s`` ago; returns their labels."""
    removed = []
    now = time.time()
    for path, label in files:
        with contextlib.suppress(FileNotFoundError):  # published or removed meanwhile
            if now - path.lstat().st_mtime > age_s:
                path.unlink()
                removed.append(label)
    return removed


def walk(root: Path) -> list[str]:
    """The relative paths of the files under ``root``. With scandir the kind of each entry
    comes with the directory listing: a volume of a million files costs no stat per file."""
    if not root.is_dir():
        return []
    found: list[str] = []
    pending = [(str(root), "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    found.append(f"{prefix}{entry.name}")
    return found
