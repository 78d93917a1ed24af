"""``ippctl storage``: volumes, keys and their files, the audit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_FAILED, EXIT_OK
from shared.core.errors import IppError
from shared.core.settings import Settings
from shared.ctl.output import connect, print_json, table
from shared.db.queries import Q
from shared.storage.store import Storage

# -- storage -------------------------------------------------------------------------------


async def _with_storage(settings: Settings, fn: Callable[[Storage], Awaitable[int]]) -> int:
    db = await connect(settings)
    try:
        return await fn(Storage(db))
    finally:
        await db.close()


async def storage_volume_add(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        vol = await st.add_volume(args.name, args.root, host=args.host, allocate=not args.no_allocate)
        print(f"added volume {vol.name} at {vol.root}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_volume_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        rows = await st.db.fetch_all(Q.list_volumes)
        if args.json:
            print_json(rows)
        else:
            print(
                table(
                    [
                        (
                            r["name"],
                            r["state"],
                            "yes" if r["allocate"] else "no",
                            r["instances"],
                            r["host"] or "-",
                            r["root"],
                        )
                        for r in rows
                    ],
                    ("VOLUME", "STATE", "ALLOCATE", "FILES", "HOST", "ROOT"),
                )
                if rows
                else "no volumes"
            )
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_volume_set(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        await st.set_volume_state(args.name, args.state)
        print(f"volume {args.name} is now {args.state}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_put(settings: Settings, args: argparse.Namespace) -> int:
    source = Path(args.file)
    if not await asyncio.to_thread(source.is_file):
        raise IppError(f"{source}: not a readable file")

    async def go(st: Storage) -> int:
        info = await st.create_from_file(args.key, source)
        print(f"{info.key}  {info.bytes} bytes  md5 {info.md5sum}  on {info.instances[0].volume}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_stat(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        info = await st.stat(args.key)
        data = {
            "key": info.key,
            "bytes": info.bytes,
            "md5sum": info.md5sum,
            "created_at": info.created_at,
            "gone": info.gone,
            "instances": [{"volume": i.volume, "state": i.state, "path": i.path} for i in info.instances],
        }
        if args.json:
            print_json(data)
        else:
            print(f"{info.key}  {info.bytes} bytes  md5 {info.md5sum}" + ("  GONE" if info.gone else ""))
            for i in info.instances:
                print(f"  {i.volume:<12} {i.state:<5} {i.path}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_locate(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        print(await st.locate(args.key))
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_rm(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        await st.delete(args.key)
        print(f"deleted {args.key}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_replicate(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        instance = await st.replicate(args.key, args.volume)
        print(f"{args.key} on {instance.volume}: {instance.path}")
        return EXIT_OK

    return await _with_storage(settings, go)


async def storage_ls(settings: Settings, args: argparse.Namespace) -> int:
    async def go(st: Storage) -> int:
        for row in await st.list(args.prefix, args.limit):
            print(f"{row['key']}  {row['bytes']}  {row['md5sum']}  {row['instances']} instance(s)")
        return EXIT_OK

    return await _with_storage(settings, go)


def _hours(text: str) -> float:
    """A positive number of hours, for argparse."""
    try:
        hours = float(text)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of hours")
    return hours


async def storage_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Files against rows on every volume that is up; exit 1 if they disagree."""

    async def go(st: Storage) -> int:
        after_s = None if args.remove_temporaries is None else args.remove_temporaries * 3600
        report = await st.audit(remove_temporaries_after_s=after_s)
        if args.json:
            print_json(dataclasses.asdict(report))
        else:
            print(f"{report.files} files on volumes that are up")
            sections = [
                ("registered but missing", report.missing),
                ("on disk but not registered", report.orphans),
                ("temporaries left by killed writers", report.temporaries),
                ("objects without any instance", report.empty_objects),
            ]
            if after_s is not None:
                sections.append(
                    (
                        f"temporaries removed (untouched for {args.remove_temporaries:g} h or more)",
                        report.temporaries_removed,
                    )
                )
            for label, items in sections:
                print(f"{label}: {len(items)}")
                for item in items[:20]:
                    print(f"  {item}")
        return EXIT_OK if report.clean else EXIT_FAILED

    return await _with_storage(settings, go)


def add_commands(top: Any) -> None:
    storage = top.add_parser("storage", help="neb:// storage: volumes and files").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    vol = storage.add_parser("volume", help="storage volumes").add_subparsers(
        dest="vaction", required=True, metavar="ACTION"
    )
    p = vol.add_parser("add", help="register a volume (a directory)")
    p.add_argument("name")
    p.add_argument("root")
    p.add_argument("--host", default="")
    p.add_argument("--no-allocate", action="store_true", help="do not place new files here")
    p.set_defaults(handler=storage_volume_add)
    p = vol.add_parser("list", help="volumes with their state and file counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=storage_volume_list)
    p = vol.add_parser("set", help="mark a volume up, down or lost")
    p.add_argument("name")
    p.add_argument("state", choices=["up", "down", "lost"])
    p.set_defaults(handler=storage_volume_set)
    p = storage.add_parser("put", help="store a local file under a new key")
    p.add_argument("key")
    p.add_argument("file")
    p.set_defaults(handler=storage_put)
    for name, handler, text in (
        ("stat", storage_stat, "size, md5 and instances of a key"),
        ("locate", storage_locate, "path of a readable instance"),
        ("rm", storage_rm, "delete every instance of a key"),
    ):
        p = storage.add_parser(name, help=text)
        p.add_argument("key")
        if name == "stat":
            p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)
    p = storage.add_parser("replicate", help="copy a key to another volume")
    p.add_argument("key")
    p.add_argument("volume")
    p.set_defaults(handler=storage_replicate)
    p = storage.add_parser("ls", help="list keys by path prefix")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(handler=storage_ls)
    p = storage.add_parser(
        "audit", help="compare the files on every volume that is up with their rows (exit 1 if they disagree)"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--remove-temporaries",
        type=_hours,
        metavar="HOURS",
        nargs="?",
        const=6.0,
        help="delete temporaries nobody has written to for HOURS (default 6)",
    )
    p.set_defaults(handler=storage_audit)
