"""Nebulous storage against a real MariaDB and real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from shared.core.errors import (
    BadKey,
    ObjectExists,
    ObjectGone,
    ObjectNotFound,
    ObjectUnavailable,
    PathEscape,
    StorageError,
)
from shared.db.database import Database
from shared.db.queries import Query
from shared.storage.keys import parse_key
from shared.storage.store import Storage

TAMPER = Query("t_tamper", "UPDATE storage_instance SET relpath = %(relpath)s", "test")


@pytest.mark.parametrize(
    ("text", "canonical", "volume", "required"),
    [
        ("neb://any/a/b.fits", "neb:///a/b.fits", None, False),
        ("neb:///a/b.fits", "neb:///a/b.fits", None, False),
        ("neb://vol1/a//b/./c/", "neb://vol1/a/b/c", "vol1", False),
        ("neb://~vol2/x", "neb://~vol2/x", "vol2", True),
    ],
)
def test_keys_are_parsed_and_canonicalised(text, canonical, volume, required):
    key = parse_key(text)
    assert (str(key), key.volume, key.required) == (canonical, volume, required)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("file:///a", "does not start with neb://"),
        ("neb://any", "has no path"),
        ("neb://any/", "empty path"),
        ("neb://any/a/../b", "'..' is not allowed"),
        ("neb://any/a b", "whitespace"),
        ("neb://any/a\tb", "whitespace"),
        ("neb://any/caf\u00e9", "non-ASCII"),
        ("neb://~/a", "'~' must be followed"),
        ("neb://bad$vol/a", "bad volume name"),
    ],
)
def test_malformed_keys_are_refused_with_the_reason(text, problem):
    with pytest.raises(BadKey, match=problem.replace("(", r"\(")):
        parse_key(text)


@pytest.fixture
async def storage(db: Database, tmp_path: Path) -> Storage:
    st = Storage(db)
    await st.add_volume("vol1", tmp_path / "vol1")
    await st.add_volume("vol2", tmp_path / "vol2")
    return st


async def test_create_records_md5_and_size_and_locate_finds_the_file(storage: Storage, tmp_path):
    data = b"pixels" * 1000
    info = await storage.create("neb://vol1/md01/o123/o123.ch.1.XY01.fits", data)
    assert (info.bytes, info.md5sum) == (len(data), hashlib.md5(data).hexdigest())
    path = await storage.locate("neb://any/md01/o123/o123.ch.1.XY01.fits")
    assert path == tmp_path / "vol1" / "md01/o123/o123.ch.1.XY01.fits"
    assert path.read_bytes() == data
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert await storage.verify("neb:///md01/o123/o123.ch.1.XY01.fits") == []


async def test_create_refuses_an_existing_key_and_keeps_the_original(storage: Storage):
    await storage.create("neb://vol1/a/x", b"first")
    with pytest.raises(ObjectExists):
        await storage.create("neb://vol2/a/x", b"second")
    assert await storage.read_bytes("neb:///a/x") == b"first"


async def test_two_concurrent_creators_of_one_key_leave_one_intact_file(storage: Storage):
    """Both write; exactly one registers; the registered file holds the winner's bytes."""
    results = await asyncio.gather(
        *(storage.create("neb://~vol1/race/x", bytes([i]) * 4096) for i in range(6)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ObjectExists) for r in results if isinstance(r, BaseException))
    assert await storage.verify("neb:///race/x") == []


async def test_a_failed_write_registers_nothing_and_leaves_no_file(storage: Storage, tmp_path):
    with pytest.raises(RuntimeError):
        async with storage.create_via("neb://vol1/b/y") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert not await storage.exists("neb:///b/y")
    assert list((tmp_path / "vol1" / "b").iterdir()) == []


async def test_delete_removes_every_instance_and_the_object(storage: Storage):
    await storage.create("neb://vol1/c/z", b"data")
    await storage.replicate("neb:///c/z", "vol2")
    paths = [i.path for i in (await storage.stat("neb:///c/z")).instances]
    assert len(paths) == 2 and all(p.exists() for p in paths)
    assert await storage.delete("neb:///c/z") is True
    assert not any(p.exists() for p in paths)
    with pytest.raises(ObjectNotFound):
        await storage.stat("neb:///c/z")
    assert await storage.delete("neb:///c/z", missing_ok=True) is False


async def test_replicate_verifies_the_copy_and_is_idempotent(storage: Storage):
    await storage.create("neb://vol1/d/w", b"abc" * 100)
    first = await storage.replicate("neb:///d/w", "vol2")
    again = await storage.replicate("neb:///d/w", "vol2")
    assert first == again and first.path.read_bytes() == b"abc" * 100
    await storage.cull("neb:///d/w", "vol1")
    info = await storage.stat("neb:///d/w")
    assert [i.volume for i in info.instances] == ["vol2"]
    with pytest.raises(StorageError, match="last instance"):
        await storage.cull("neb:///d/w", "vol2")


async def test_a_key_is_gone_only_when_every_instance_is_on_a_lost_volume(storage: Storage):
    await storage.create("neb://vol1/e/v", b"x")
    await storage.replicate("neb:///e/v", "vol2")
    await storage.set_volume_state("vol1", "lost")
    assert not await storage.is_gone("neb:///e/v")
    assert (await storage.locate("neb:///e/v")).parent.parent.name == "vol2"
    await storage.set_volume_state("vol2", "down")
    with pytest.raises(ObjectUnavailable):
        await storage.locate("neb:///e/v")
    assert not await storage.is_gone("neb:///e/v")
    await storage.set_volume_state("vol2", "lost")
    assert await storage.is_gone("neb:///e/v")
    with pytest.raises(ObjectGone):
        await storage.locate("neb:///e/v")


async def test_delete_refuses_while_a_volume_is_down_and_changes_nothing(storage: Storage):
    await storage.create("neb://vol1/f/u", b"x")
    await storage.replicate("neb:///f/u", "vol2")
    await storage.set_volume_state("vol2", "down")
    with pytest.raises(ObjectUnavailable, match="vol2"):
        await storage.delete("neb:///f/u")
    info = await storage.stat("neb:///f/u")
    assert len(info.instances) == 2 and all(i.path.exists() for i in info.instances)


async def test_a_symlink_out_of_the_volume_is_never_written_through(storage: Storage, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "vol1" / "escape")
    with pytest.raises(PathEscape, match="outside the root"):
        await storage.create("neb://~vol1/escape/evil", b"x")
    assert list(outside.iterdir()) == []
    assert not await storage.exists("neb:///escape/evil")


async def test_a_tampered_instance_path_is_never_deleted(storage: Storage, db, tmp_path):
    victim = tmp_path / "precious"
    victim.write_bytes(b"keep me")
    await storage.create("neb://vol1/g/t", b"x")
    await db.execute(TAMPER, relpath="../precious")
    with pytest.raises(PathEscape):
        await storage.delete("neb:///g/t")
    assert victim.read_bytes() == b"keep me"


async def test_volumes_are_validated(storage: Storage):
    with pytest.raises(StorageError, match="absolute path"):
        await storage.add_volume("vol3", "relative/root")
    with pytest.raises(StorageError, match="already exists"):
        await storage.add_volume("vol1", "/tmp/whatever")
    with pytest.raises(StorageError, match="state must be one of"):
        await storage.set_volume_state("vol1", "sideways")
    with pytest.raises(StorageError, match="no storage volume named 'nope'"):
        await storage.set_volume_state("nope", "down")


async def test_batch_deletes_refuse_a_tampered_path_and_touch_nothing(storage: Storage, db, tmp_path):
    victim = tmp_path / "precious"
    victim.write_bytes(b"keep me")
    await storage.create("neb://vol1/h/s", b"x")
    await storage.create("neb://vol1/h/t", b"y")
    await storage.create("neb://vol1/h/u", b"z")
    await db.execute(
        Query(
            "t_tamper1", "UPDATE storage_instance SET relpath = '../precious' WHERE relpath = 'h/s'", "test"
        )
    )
    report = await storage.delete_many(["neb:///h/s", "neb:///h/t", "neb:///h/u"])
    assert victim.read_bytes() == b"keep me"
    # the tampered key alone is refused (and kept registered); the others are deleted
    assert list(report.refused) == ["neb:///h/s"]
    assert "outside the root" in report.refused["neb:///h/s"]
    assert report.deleted == ["neb:///h/t", "neb:///h/u"]
    assert await storage.exists("neb:///h/s") and not await storage.exists("neb:///h/t")


async def test_a_volume_root_swapped_for_a_link_is_refused_everywhere(storage: Storage, tmp_path):
    """The root is compared with the one registered (resolved once): after it is replaced
    by a symlink, nothing reads, writes or deletes through the link."""
    await storage.create("neb://~vol1/k/file", b"mine")
    root = tmp_path / "vol1"
    elsewhere = tmp_path / "elsewhere"
    root.rename(tmp_path / "vol1.moved")
    (elsewhere / "k").mkdir(parents=True)
    (elsewhere / "k" / "file").write_bytes(b"someone else's")
    root.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PathEscape, match="now resolves to"):
        await storage.locate("neb:///k/file")
    with pytest.raises(PathEscape, match="now resolves to"):
        await storage.create("neb://~vol1/k/new", b"x")
    report = await storage.delete_many(["neb:///k/file"])
    assert list(report.refused) == ["neb:///k/file"] and not report.deleted
    assert (elsewhere / "k" / "file").read_bytes() == b"someone else's"
    assert not (elsewhere / "k" / "new").exists()


async def test_a_symlinked_file_pointing_out_is_refused_in_batches(storage: Storage, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    info = await storage.create("neb://vol1/i/link", b"x")
    path = info.instances[0].path
    path.unlink()
    os.symlink(outside, path)
    with pytest.raises(PathEscape):
        await storage.paths_many(["neb:///i/link"])
    assert outside.read_bytes() == b"secret"


async def test_deleting_a_symlinked_file_removes_the_link_never_its_target(storage: Storage, tmp_path):
    """A batch delete unlinks the name inside the volume; a symlink's target outside it is
    untouched (deletes skip the per-file symlink check for that reason)."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    info = await storage.create("neb://vol1/j/link", b"x")
    path = info.instances[0].path
    path.unlink()
    os.symlink(outside, path)
    report = await storage.delete_many(["neb:///j/link"])
    assert report.deleted == ["neb:///j/link"]
    assert not path.is_symlink() and outside.read_bytes() == b"secret"


async def test_delete_under_removes_every_key_of_a_prefix_and_nothing_else(storage: Storage):
    for name in ("a", "b", "c"):
        await storage.create(f"neb://vol1/batch/one/{name}", b"x")
    await storage.create("neb://vol1/batch/onething", b"keep")
    report = await storage.delete_under("batch/one/")
    assert sorted(report.deleted) == [f"neb:///batch/one/{n}" for n in ("a", "b", "c")]
    assert await storage.exists("neb:///batch/onething")
    with pytest.raises(StorageError, match="must end with '/'"):
        await storage.delete_under("batch/one")


@pytest.mark.parametrize("count", [3, 40])
async def test_a_batch_create_publishes_every_file_registered_with_its_md5(storage: Storage, count: int):
    """create_many syncs a few files one by one and many with one syncfs per file system
    (40 is over SYNCFS_FROM_FILES, 3 under): either way each key is registered with the
    md5 of its bytes, its file holds them and no temporary is left."""
    items = [(f"neb://any/many{count}/d{i % 5}/f{i}", os.urandom(100 + i)) for i in range(count)]
    await storage.create_many(items)
    for key, data in items:
        assert await storage.verify(key) == []
        assert (await storage.locate(key)).read_bytes() == data
    roots = [v.root for v in await storage.volumes()]
    assert not [p for root in roots for p in Path(root).rglob(".*.tmp-*")]


async def test_a_batch_delete_across_directories_removes_every_file(storage: Storage):
    """delete_many unlinks several directories' files in parallel lanes; all go, rows too."""
    keys = [f"neb://any/lanes/d{i % 7}/f{i}" for i in range(60)]
    await storage.create_many([(k, b"x") for k in keys])
    paths = [await storage.locate(k) for k in keys]
    report = await storage.delete_many(keys)
    assert sorted(report.deleted) == sorted(str(parse_key(k)) for k in keys)
    assert not [p for p in paths if p.exists()]
    assert not [k for k in keys if await storage.exists(k)]


async def test_audit_finds_missing_unregistered_and_temporary_files(storage: Storage, db, tmp_path):
    """Rows without files, files without rows and writers' temporaries are each named by
    volume and path; the report is clean only without the first two. Removing temporaries
    takes those untouched for long enough and nothing else."""
    await storage.create("neb://vol1/k/kept", b"a")
    lost = await storage.create("neb://vol1/k/lost", b"b")
    lost.instances[0].path.unlink()
    (tmp_path / "vol1" / "k" / "stray").write_bytes(b"c")
    (tmp_path / "vol2" / "k").mkdir(parents=True)
    old = tmp_path / "vol2" / "k" / ".img.fits.tmp-0123456789ab"
    young = tmp_path / "vol2" / "k" / ".img2.fits.tmp-abcdef012345"
    for path in (old, young):
        path.write_bytes(b"half")
    then = time.time() - 7 * 3600
    os.utime(old, (then, then))
    report = await storage.audit()
    assert report.missing == ["vol1:k/lost"] and report.orphans == ["vol1:k/stray"]
    assert report.temporaries == [f"vol2:k/{old.name}", f"vol2:k/{young.name}"]
    assert report.temporaries_removed == [] and not report.clean and old.exists()
    report = await storage.audit(remove_temporaries_after_s=6 * 3600)
    assert report.temporaries_removed == [f"vol2:k/{old.name}"]
    assert not old.exists() and young.exists()
    assert (tmp_path / "vol1" / "k" / "stray").exists()
