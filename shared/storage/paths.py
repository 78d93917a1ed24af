"""Paths confined to a volume root: every path is resolved (symlinks included) and checked
before use, so nothing outside a root is ever touched."""

from __future__ import annotations

from pathlib import Path

from shared.core.errors import (
    PathEscape,
)


def registered_root(root: str | Path, *, volume: str = "?") -> Path:
    """A volume's root as registered (resolved once, when the volume was added), checked to
    resolve to itself still: a root swapped for a symlink would otherwise carry every path
    of the volume to wherever the link points."""
    base = Path(root)
    now = base.resolve()
    if now != base:
        raise PathEscape(
            f"the root {base} of volume {volume} now resolves to {now} (was it replaced by a link?): refused"
        )
    return base


def resolve_inside(root: str | Path, relpath: str, *, volume: str = "?") -> Path:
    """``root/relpath`` with symlinks resolved; PathEscape if it leaves the root."""
    base = registered_root(root, volume=volume)
    target = (base / relpath).resolve()
    if not target.is_relative_to(base) or target == base:
        raise PathEscape(
            f"storage path {relpath!r} resolves to {target}, outside the root {base} of volume {volume}"
        )
    return target


class Resolver:
    """``resolve_inside`` for many paths of one batch: each directory is resolved once.

    The final name is checked on its own: if it is a symlink it is resolved and must stay
    inside the root too. A cache lives for one batch only, so a directory swapped for a
    symlink later is seen by the next batch.
    """

    def __init__(self, *, for_unlink: bool = False) -> None:
        self._dirs: dict[tuple[str, str], Path] = {}
        self._roots: dict[str, Path] = {}
        # Unlinking a symlink removes the link itself, never its target: paths that are only
        # unlinked need their directories checked, not the final name (one lstat less each).
        self._check_name = not for_unlink

    def __call__(self, root: str, relpath: str, *, volume: str = "?") -> Path:
        base = self._roots.get(root)
        if base is None:
            base = self._roots[root] = registered_root(root, volume=volume)
        parent, _, name = relpath.rpartition("/")
        directory = self._dirs.get((root, parent))
        if directory is None:
            directory = (base / parent).resolve() if parent else base
            if not directory.is_relative_to(base):
                raise PathEscape(
                    f"storage path {relpath!r} resolves to {directory / name}, "
                    f"outside the root {base} of volume {volume}"
                )
            self._dirs[(root, parent)] = directory
        target = directory / name
        if (
            not name
            or name in (".", "..")
            or (self._check_name and target.is_symlink() and not target.resolve().is_relative_to(base))
        ):
            raise PathEscape(
                f"storage path {relpath!r} resolves to {target.resolve()}, "
                f"outside the root {base} of volume {volume}"
            )
        return target
