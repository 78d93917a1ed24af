"""Nebulous-style storage: ``neb://`` keys resolved to files under volume roots.

A key (REFERENCE 5) is ``neb://<volume>/<path>``: the volume is only a preference (``any`` or
empty for none, ``~name`` for "must be that volume"); the object's identity is its canonical
path. An object has one or more instances, each a real file on one volume.

Writes go to a temporary name beside the target, are made durable (fsync, or one syncfs for
a batch of many small files), and are renamed into place inside the transaction that
registers them, while that transaction holds the key's unique row: a concurrent creator of
the same key waits instead of overwriting. md5 and size are recorded at creation. Deletes
remove every instance's file, then the rows, so a redo after a crash is harmless. Nothing
outside a volume root is ever touched: every path is resolved (symlinks included) and
checked before use.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.core.errors import (
    DbIntegrityError,
    DbUnavailable,
    ObjectExists,
    ObjectGone,
    ObjectNotFound,
    ObjectUnavailable,
    PathEscape,
    StorageCorrupt,
    StorageError,
)
from shared.db.database import Database, Row, Tx
from shared.db.queries import Q
from shared.storage.audit import TEMP_NAME, AuditReport, remove_older_than, walk
from shared.storage.files import (
    fsync_and_hash,
    hash_file,
    link_hash,
    publish,
    publish_all,
    split_in_lanes,
    sync_files,
    unlink,
    unlink_all,
    unlink_many,
    write_all,
)
from shared.storage.keys import SCHEME, VOLUME_NAME, NebKey, parse_key
from shared.storage.paths import Resolver, resolve_inside

_CHUNK = 1 << 20
VOLUME_STATES = ("up", "down", "lost")
#: Keys per lookup and per deleting transaction in the batch operations.
KEYS_PER_QUERY = 1000


@dataclass(frozen=True)
class Volume:
    vol_id: int
    name: str
    host: str
    root: str
    state: str
    allocate: bool

    @classmethod
    def from_row(cls, row: Row) -> Volume:
        return cls(row["vol_id"], row["name"], row["host"], row["root"], row["state"], bool(row["allocate"]))


@dataclass(frozen=True)
class Instance:
    ins_id: int
    volume: str
    vol_id: int
    state: str
    path: Path


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` reports about a key."""

    key: str
    bytes: int
    md5sum: str
    created_at: datetime
    instances: tuple[Instance, ...]

    @property
    def gone(self) -> bool:
        """True when every instance sits on a volume marked lost (REFERENCE 5)."""
        return bool(self.instances) and all(i.state == "lost" for i in self.instances)


@dataclass
class DeleteReport:
    """What :meth:`Storage.delete_many` did with each key."""

    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    #: Keys left alone because a path of theirs leaves its volume: key -> the reason.
    refused: dict[str, str] = field(default_factory=dict)
    #: Bytes of the file instances removed (what the deletion freed on disk).
    bytes_freed: int = 0


class Storage:
    """Storage operations against one site's database and its volumes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- volumes -------------------------------------------------------------------------

    async def add_volume(
        self, name: str, root: str | Path, *, host: str = "", allocate: bool = True
    ) -> Volume:
        if not VOLUME_NAME.match(name):
            raise StorageError(f"volume name {name!r} must be 1-64 of [A-Za-z0-9_.-]")
        path = Path(root)
        if not path.is_absolute():
            raise StorageError(f"volume {name}: root {root!s} must be an absolute path")
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        resolved = await asyncio.to_thread(path.resolve)
        try:
            await self.db.insert(
                Q.add_volume, name=name, host=host, root=str(resolved), allocate=int(allocate)
            )
        except DbIntegrityError:
            raise StorageError(f"volume {name} already exists") from None
        return await self.volume(name)

    async def volume(self, name: str) -> Volume:
        row = await self.db.fetch_one(Q.get_volume, name=name)
        if row is None:
            raise StorageError(f"no storage volume named {name!r}")
        return Volume.from_row(row)

    async def volumes(self) -> list[Volume]:
        """Every volume (without file counts: this runs on every create)."""
        return [Volume.from_row(r) for r in await self.db.fetch_all(Q.volumes_brief)]

    async def set_volume_state(self, name: str, state: str) -> None:
        if state not in VOLUME_STATES:
            raise StorageError(f"volume state must be one of {', '.join(VOLUME_STATES)}, got {state!r}")
        if await self.db.execute(Q.set_volume_state, name=name, state=state) != 1:
            await self.volume(name)  # raises for an unknown name; else the state was unchanged

    async def _choose_volume(self, key: NebKey) -> Volume:
        return self._place(key, await self.volumes())

    @staticmethod
    def _place(key: NebKey, volumes: list[Volume]) -> Volume:
        if key.volume is not None:
            named = next((v for v in volumes if v.name == key.volume), None)
            if key.required:
                if named is None:
                    raise StorageError(f"{key}: no storage volume named {key.volume!r}")
                if named.state != "up":
                    raise ObjectUnavailable(f"{key}: required volume {named.name} is {named.state}")
                return named
            if named is not None and named.state == "up" and named.allocate:
                return named
        usable = [v for v in volumes if v.state == "up" and v.allocate]
        if not usable:
            raise ObjectUnavailable(f"{key}: no storage volume is up and open for new files")
        # Spread keys over the volumes, the same key always to the same volume.
        return usable[zlib.crc32(key.path.encode()) % len(usable)]

    # -- create --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def create_via(self, key_text: str) -> AsyncIterator[Path]:
        """Yield a temporary path to write; on exit it is fsynced, renamed and registered.

        If the body raises, or registration fails, the temporary file is removed and nothing
        is registered.
        """
        key = parse_key(key_text)
        if await self.db.fetch_one(Q.get_object, ext_id=key.path):
            raise ObjectExists(f"{key} already exists")
        volume = await self._choose_volume(key)
        final = resolve_inside(volume.root, key.path, volume=volume.name)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        final = resolve_inside(volume.root, key.path, volume=volume.name)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:  # the undo (remove tmp) is in place before anything is written
            yield tmp
            if not await asyncio.to_thread(tmp.exists):
                raise StorageError(f"{key}: nothing was written to the temporary file")
            size, md5 = await asyncio.to_thread(fsync_and_hash, tmp)
            await self._register(key, volume, tmp, final, size, md5)
        finally:
            await asyncio.to_thread(unlink, tmp)

    async def _publish_registered(
        self, name: str, tmp: Path, final: Path, register: Callable[[Tx], Awaitable[bool]]
    ) -> None:
        """Run ``register`` in one transaction; when it returns True, rename ``tmp`` to
        ``final`` before the commit, while the rows it wrote are still locked, so no other
        writer can publish the same file meanwhile.

        If the transaction certainly did not commit, the published file is removed again. If
        the outcome is unknown (the connection was lost), it is kept: an unregistered file is
        harmless, a registered key without its file would be a loss.
        """
        published = False

        async def attempt(tx: Tx) -> None:
            nonlocal published
            if await register(tx) and not published:  # a retry finds it already in place
                await asyncio.to_thread(publish, tmp, final)
                published = True

        try:
            await self.db.transaction(attempt, name=name)
        except DbUnavailable:
            raise
        except BaseException:
            if published:
                await asyncio.to_thread(unlink, final)
            raise

    async def _register(
        self, key: NebKey, volume: Volume, tmp: Path, final: Path, size: int, md5: str
    ) -> None:
        async def register(tx: Tx) -> bool:
            try:
                obj_id = await tx.insert(Q.insert_object, ext_id=key.path, bytes=size, md5sum=md5)
            except DbIntegrityError:
                if await self._is_ours(tx, key, volume, size, md5):
                    return False  # a redo after a lost COMMIT reply: already registered
                raise ObjectExists(f"{key} already exists") from None
            await tx.insert(Q.insert_instance, obj_id=obj_id, vol_id=volume.vol_id, relpath=key.path)
            return True

        await self._publish_registered("storage_create", tmp, final, register)

    async def _is_ours(self, tx: Tx, key: NebKey, volume: Volume, size: int, md5: str) -> bool:
        row = await tx.fetch_one(Q.get_object_for_update, ext_id=key.path)
        if row is None or row["bytes"] != size or row["md5sum"] != md5:
            return False
        instances = await tx.fetch_all(Q.object_instances, obj_id=row["obj_id"])
        return any(i["vol_id"] == volume.vol_id for i in instances)

    async def create(self, key_text: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under a new key."""
        async with self.create_via(key_text) as tmp:
            await asyncio.to_thread(tmp.write_bytes, data)
        return await self.stat(key_text)

    async def create_from_file(self, key_text: str, source: Path) -> ObjectInfo:
        """Copy a local file into storage under a new key."""
        async with self.create_via(key_text) as tmp:
            await asyncio.to_thread(shutil.copyfile, source, tmp)
        return await self.stat(key_text)

    # -- read ----------------------------------------------------------------------------

    async def _object(self, key: NebKey) -> Row:
        row = await self.db.fetch_one(Q.get_object, ext_id=key.path)
        if row is None:
            raise ObjectNotFound(f"{key} does not exist")
        return row

    async def _instances(self, obj_id: int) -> list[Instance]:
        rows = await self.db.fetch_all(Q.object_instances, obj_id=obj_id)
        return [
            Instance(
                r["ins_id"],
                r["volume"],
                r["vol_id"],
                r["state"],
                resolve_inside(r["root"], r["relpath"], volume=r["volume"]),
            )
            for r in rows
        ]

    async def stat(self, key_text: str) -> ObjectInfo:
        key = parse_key(key_text)
        row = await self._object(key)
        return ObjectInfo(
            str(NebKey(key.path)),
            row["bytes"],
            row["md5sum"],
            row["created_at"],
            tuple(await self._instances(row["obj_id"])),
        )

    async def exists(self, key_text: str) -> bool:
        return await self.db.fetch_one(Q.get_object, ext_id=parse_key(key_text).path) is not None

    async def is_gone(self, key_text: str) -> bool:
        """True when every instance of the key is on a lost volume."""
        return (await self.stat(key_text)).gone

    async def stat_many(self, keys: list[str]) -> dict[str, Row]:
        """Registered keys among ``keys`` (canonical path -> bytes, md5sum, instance counts),
        in batched queries; unregistered keys are absent from the result."""
        paths = sorted({parse_key(k).path for k in keys})
        found: dict[str, Row] = {}
        for start in range(0, len(paths), KEYS_PER_QUERY):
            batch = tuple(paths[start : start + KEYS_PER_QUERY])
            for row in await self.db.fetch_all(Q.objects_by_ext_ids, ext_ids=batch):
                found[row["ext_id"]] = row
        return found

    async def locate(self, key_text: str) -> Path:
        """The path of a readable instance, preferring the key's volume."""
        key = parse_key(key_text)
        info = await self.stat(key_text)
        up = [i for i in info.instances if i.state == "up"]
        if key.volume is not None:
            up.sort(key=lambda i: i.volume != key.volume)
            if key.required:
                up = [i for i in up if i.volume == key.volume]
        for instance in up:
            if await asyncio.to_thread(instance.path.is_file):
                return instance.path
        if info.gone:
            raise ObjectGone(f"{key} is gone: every instance is on a lost volume")
        if up:
            raise StorageCorrupt(f"{key}: registered, but no instance file exists on disk")
        raise ObjectUnavailable(f"{key}: no instance is on a volume that is up")

    async def read_bytes(self, key_text: str) -> bytes:
        return await asyncio.to_thread((await self.locate(key_text)).read_bytes)

    async def audit(self, *, remove_temporaries_after_s: float | None = None) -> AuditReport:
        """Compare every volume that is up with its rows: files missing, files nobody
        registered, temporaries left by killed writers, objects without instances. With
        ``remove_temporaries_after_s``, temporaries not written to for that long are
        deleted (a writer that is alive publishes or removes its temporary long before)."""
        report = AuditReport()
        old_temporaries: list[tuple[Path, str]] = []
        for vol in await self.db.fetch_all(Q.list_volumes):
            if vol["state"] != "up":
                continue
            root = Path(vol["root"])
            rows = {r["relpath"] for r in await self.db.fetch_all(Q.audit_instances, vol_id=vol["vol_id"])}
            on_disk = set(await asyncio.to_thread(walk, root))
            report.files += len(on_disk)
            report.missing += [f"{vol['name']}:{p}" for p in sorted(rows - on_disk)]
            for rel in sorted(on_disk - rows):
                if not TEMP_NAME.match(Path(rel).name):
                    report.orphans.append(f"{vol['name']}:{rel}")
                    continue
                report.temporaries.append(f"{vol['name']}:{rel}")
                if remove_temporaries_after_s is not None:
                    path = resolve_inside(root, rel, volume=vol["name"])
                    old_temporaries.append((path, f"{vol['name']}:{rel}"))
        if old_temporaries:
            assert remove_temporaries_after_s is not None
            report.temporaries_removed = await asyncio.to_thread(
                remove_older_than, old_temporaries, remove_temporaries_after_s
            )
        report.empty_objects = [
            str(r["ext_id"]) for r in await self.db.fetch_all(Q.audit_objects_without_instances)
        ]
        return report

    async def verify(self, key_text: str) -> list[str]:
        """Recompute every reachable instance's size and md5; returns the problems found."""
        info = await self.stat(key_text)
        problems = []
        for instance in info.instances:
            if instance.state != "up":
                continue
            if not await asyncio.to_thread(instance.path.is_file):
                problems.append(f"{instance.volume}: file missing")
                continue
            size, md5 = await asyncio.to_thread(hash_file, instance.path)
            if (size, md5) != (info.bytes, info.md5sum):
                problems.append(
                    f"{instance.volume}: {size} bytes md5 {md5}, expected "
                    f"{info.bytes} bytes md5 {info.md5sum}"
                )
        return problems

    # -- replicate / cull / delete -------------------------------------------------------

    async def replicate(self, key_text: str, volume_name: str) -> Instance:
        """Copy the key to another volume, verify the copy, register it. Idempotent."""
        key = parse_key(key_text)
        info = await self.stat(key_text)
        target = await self.volume(volume_name)
        existing = next((i for i in info.instances if i.vol_id == target.vol_id), None)
        if existing is not None:
            return existing
        if target.state != "up":
            raise ObjectUnavailable(f"{key}: target volume {target.name} is {target.state}")
        source = await self.locate(key_text)
        final = resolve_inside(target.root, key.path, volume=target.name)
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            await asyncio.to_thread(shutil.copyfile, source, tmp)
            size, md5 = await asyncio.to_thread(fsync_and_hash, tmp)
            if (size, md5) != (info.bytes, info.md5sum):
                raise StorageCorrupt(
                    f"{key}: copy from {source} has {size} bytes md5 {md5}, expected "
                    f"{info.bytes} bytes md5 {info.md5sum}"
                )
            await self._add_instance(key, target, tmp, final)
        finally:
            await asyncio.to_thread(unlink, tmp)
        refreshed = await self.stat(key_text)
        return next(i for i in refreshed.instances if i.vol_id == target.vol_id)

    async def _add_instance(self, key: NebKey, target: Volume, tmp: Path, final: Path) -> None:
        async def add(tx: Tx) -> bool:
            row = await tx.fetch_one(Q.get_object_for_update, ext_id=key.path)
            if row is None:
                raise ObjectNotFound(f"{key} was deleted while being replicated")
            try:
                await tx.insert(
                    Q.insert_instance, obj_id=row["obj_id"], vol_id=target.vol_id, relpath=key.path
                )
            except DbIntegrityError:
                return False  # a concurrent replicate registered it first
            return True

        await self._publish_registered("storage_replicate", tmp, final, add)

    async def cull(self, key_text: str, volume_name: str) -> None:
        """Remove the instance on one volume, refusing to remove the last readable one."""
        key = parse_key(key_text)
        info = await self.stat(key_text)
        victim = next((i for i in info.instances if i.volume == volume_name), None)
        if victim is None:
            raise StorageError(f"{key} has no instance on volume {volume_name}")
        others = [i for i in info.instances if i is not victim and i.state == "up"]
        if not others:
            raise StorageError(f"{key}: refusing to cull the last instance on a volume that is up")
        if victim.state == "down":
            raise ObjectUnavailable(f"{key}: volume {volume_name} is down; cannot remove the file")
        if victim.state == "up":
            await asyncio.to_thread(unlink, victim.path)
        await self.db.execute(Q.delete_instance, ins_id=victim.ins_id)

    async def delete(self, key_text: str, *, missing_ok: bool = False) -> bool:
        """Remove every instance and the object; False if it did not exist (missing_ok).

        Refuses (changing nothing) while an instance sits on a volume that is down, since its
        file could not be removed; instances on lost volumes are simply forgotten.
        """
        key = parse_key(key_text)
        row = await self.db.fetch_one(Q.get_object, ext_id=key.path)
        if row is None:
            if missing_ok:
                return False
            raise ObjectNotFound(f"{key} does not exist")
        instances = await self._instances(row["obj_id"])
        down = [i.volume for i in instances if i.state == "down"]
        if down:
            raise ObjectUnavailable(f"cannot delete {key}: volume(s) {', '.join(down)} down")
        for instance in instances:
            if instance.state == "up":
                await asyncio.to_thread(unlink, instance.path)

        async def forget(tx: Tx) -> None:
            await tx.execute(Q.delete_instances, obj_id=row["obj_id"])
            await tx.execute(Q.delete_object, obj_id=row["obj_id"])

        await self.db.transaction(forget, name="storage_delete")
        return True

    async def delete_many(self, keys: list[str]) -> DeleteReport:
        """Delete many keys with one lookup and one transaction per KEYS_PER_QUERY keys.

        Keys with an instance on a volume that is down are left alone and reported as
        unavailable; keys with a path that leaves its volume (a directory or root swapped for
        a link) are left alone and reported as refused, with the reason; unregistered keys
        are reported as missing. Files go first, then rows, so a redo after a crash is
        harmless (as in :meth:`delete`).
        """
        report = DeleteReport()
        paths = sorted({parse_key(k).path for k in keys})
        for start in range(0, len(paths), KEYS_PER_QUERY):
            batch = paths[start : start + KEYS_PER_QUERY]
            rows = await self.db.fetch_all(Q.instances_by_ext_ids, ext_ids=tuple(batch))
            by_path: dict[str, list[Row]] = {}
            for row in rows:
                by_path.setdefault(row["ext_id"], []).append(row)
            report.missing += [f"{SCHEME}/{p}" for p in batch if p not in by_path]
            doomed: list[Path] = []
            obj_ids: list[int] = []
            resolve = Resolver(for_unlink=True)
            for path, instances in by_path.items():
                if any(i["state"] == "down" for i in instances):
                    report.unavailable.append(f"{SCHEME}/{path}")
                    continue
                try:
                    files = [
                        resolve(i["root"], i["relpath"], volume=i["volume"])
                        for i in instances
                        if i["ins_id"] is not None and i["state"] == "up"
                    ]
                except PathEscape as exc:
                    report.refused[f"{SCHEME}/{path}"] = str(exc)
                    continue
                doomed += files
                report.bytes_freed += sum(
                    int(i["bytes"]) for i in instances if i["ins_id"] is not None and i["state"] == "up"
                )
                obj_ids.append(int(instances[0]["obj_id"]))
                report.deleted.append(f"{SCHEME}/{path}")
            await unlink_many(doomed)
            if obj_ids:

                async def forget(tx: Tx, ids: tuple[int, ...] = tuple(obj_ids)) -> None:
                    await tx.execute(Q.delete_instances_of, obj_ids=ids)
                    await tx.execute(Q.delete_objects, obj_ids=ids)

                await self.db.transaction(forget, name="storage_delete_many")
        return report

    async def paths_many(self, keys: list[str]) -> dict[str, Path]:
        """A readable instance path (on a volume that is up) for each registered key, by its
        canonical path; keys without one are absent."""
        paths = sorted({parse_key(k).path for k in keys})
        found: dict[str, Path] = {}
        resolve = Resolver()
        for start in range(0, len(paths), KEYS_PER_QUERY):
            rows = await self.db.fetch_all(
                Q.instances_by_ext_ids, ext_ids=tuple(paths[start : start + KEYS_PER_QUERY])
            )
            for row in rows:
                if row["ins_id"] is not None and row["state"] == "up" and row["ext_id"] not in found:
                    found[row["ext_id"]] = resolve(row["root"], row["relpath"], volume=row["volume"])
        return found

    async def create_many(self, items: list[tuple[str, bytes]]) -> None:
        """Store many new keys with one volume lookup, the writes in lanes of directories (made
        durable together, see :func:`sync_files`) and one registering transaction (files
        are published inside it, as :meth:`create_via` does). Any key that exists already
        fails the whole batch with ObjectExists."""

        async def stage(staged: list[tuple[Path, bytes]]) -> list[tuple[int, str]]:
            data = dict(staged)
            lanes = split_in_lanes([tmp for tmp, _ in staged])
            done = await asyncio.gather(
                *(asyncio.to_thread(write_all, [(tmp, data[tmp]) for tmp in lane]) for lane in lanes)
            )
            hashed = {
                tmp: result
                for lane, results in zip(lanes, done, strict=True)
                for tmp, result in zip(lane, results, strict=True)
            }
            await asyncio.to_thread(sync_files, [tmp for tmp, _ in staged])
            return [hashed[tmp] for tmp, _ in staged]

        await self._create_batch(items, stage)

    async def create_many_by_moving(
        self, items: list[tuple[str, Path]], *, digests: dict[Path, tuple[int, str]] | None = None
    ) -> None:
        """Like :meth:`create_many` for local files (e.g. staged processor outputs): each is
        hard-linked (or copied) into its volume, fsynced and hashed, several at once; the
        sources are removed once the batch is registered. ``digests`` gives (bytes, md5) of
        sources the caller hashed while writing them, so they are not read again."""
        known = digests or {}

        async def stage(staged: list[tuple[Path, Path]]) -> list[tuple[int, str]]:
            return list(
                await asyncio.gather(
                    *(asyncio.to_thread(link_hash, src, tmp, known.get(src)) for tmp, src in staged)
                )
            )

        await self._create_batch(items, stage)
        await asyncio.to_thread(unlink_all, [src for _, src in items])

    async def _create_batch(
        self,
        items: list[tuple[str, Any]],
        stage: Callable[[list[tuple[Path, Any]]], Awaitable[list[tuple[int, str]]]],
    ) -> None:
        """Place each key on a volume, ``stage`` the temporary files (returning bytes and md5
        of each), then register and publish the batch in one transaction."""
        if not items:
            return
        volumes = await self.volumes()
        resolve = Resolver()
        placed: list[tuple[NebKey, Volume, Path, Path]] = []
        for key_text, _source in items:
            key = parse_key(key_text)
            volume = self._place(key, volumes)
            final = resolve(str(volume.root), key.path, volume=volume.name)
            placed.append((key, volume, final, final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"))
        try:
            hashed = await stage(
                [(tmp, source) for (*_, tmp), (_, source) in zip(placed, items, strict=True)]
            )
            await self._register_batch(placed, hashed)
        finally:
            await asyncio.to_thread(unlink_all, [tmp for *_, tmp in placed])

    async def _register_batch(
        self, placed: list[tuple[NebKey, Volume, Path, Path]], hashed: list[tuple[int, str]]
    ) -> None:
        published: list[Path] = []

        async def register(tx: Tx) -> None:
            rows = [
                {"ext_id": k.path, "bytes": size, "md5sum": md5}
                for (k, *_), (size, md5) in zip(placed, hashed, strict=True)
            ]
            try:
                await tx.execute_many(Q.insert_object, rows)
            except DbIntegrityError as exc:
                raise ObjectExists(f"a key of this batch already exists: {exc}") from None
            by_volume: dict[int, list[str]] = {}
            for k, volume, *_ in placed:
                by_volume.setdefault(volume.vol_id, []).append(k.path)
            for vol_id, ext_ids in by_volume.items():
                await tx.execute(Q.instances_from_objects, vol_id=vol_id, ext_ids=tuple(ext_ids))
            if not published:
                await asyncio.to_thread(publish_all, [(tmp, final) for _, _, final, tmp in placed])
                published.extend(final for _, _, final, _ in placed)

        try:
            await self.db.transaction(register, name="storage_create_many")
        except DbUnavailable:
            raise
        except BaseException:
            await asyncio.to_thread(unlink_all, published)
            raise

    async def delete_under(self, prefix: str) -> DeleteReport:
        """Delete every key whose path starts with ``prefix`` (a directory-like prefix ending
        in '/'), in batches: e.g. what an unfinished attempt stored before a crash."""
        if not prefix.endswith("/"):
            raise StorageError(f"delete_under({prefix!r}): the prefix must end with '/'")
        total = DeleteReport()
        while keys := [o["key"] for o in await self.list(prefix, limit=1000)]:
            report = await self.delete_many(keys)
            total.deleted += report.deleted
            total.missing += report.missing
            total.unavailable += report.unavailable
            if len(report.unavailable) == len(keys):  # only keys that cannot go now are left
                break
        return total

    async def list(self, prefix: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Registered keys whose path starts with ``prefix``."""
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.db.fetch_all(Q.list_objects, prefix=like, limit=limit)
        return [{**r, "key": f"{SCHEME}/{r['ext_id']}"} for r in rows]
