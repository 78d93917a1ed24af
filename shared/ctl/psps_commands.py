"""``ippctl psps ...``: loading configurations, the queue, the IN batch, batch listings."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shared.core.cli import EXIT_FAILED, EXIT_OK, ask_line
from shared.core.settings import Settings
from shared.ctl.output import print_json, table, with_dbs, with_ipptopsps
from shared.db.database import Database, Row
from shared.db.queries import Q
from shared.db.roles import Databases
from shared.psps import configs, operations
from shared.psps.configs import ConfigError


async def config_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Prompt field by field, as queue.py's ``edit`` did (the name first if none is given)."""

    async def go(db: Database) -> int:
        await configs.edit(db, args.name, ask_line, print)
        return EXIT_OK

    return await with_ipptopsps(settings, go)


async def config_set(settings: Settings, args: argparse.Namespace) -> int:
    assignments: dict[str, str] = {}
    for item in args.assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{item!r} is not key=value")
        assignments[configs.field(key.strip()).name] = value

    async def go(db: Database) -> int:
        values = await configs.set_fields(db, args.name, assignments)
        for key in assignments:
            print(f"{args.name}.{key} = {configs.show(values[key])}")
        return EXIT_OK

    return await with_ipptopsps(settings, go)


async def config_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = (
            [dataclasses.asdict(c) for c in await configs.configs(db, "all")]
            if args.active
            else await _all(db)
        )
        if args.json:
            print_json(rows)
            return EXIT_OK
        if not rows:
            print("no loading configs (ippctl psps config edit NAME)")
            return EXIT_OK
        print(
            table(
                [
                    (
                        r["name"],
                        "yes" if r["active"] else "no",
                        r["batch_types"],
                        r["datastore_product"],
                        f"{r['min_ra']:g}..{r['max_ra']:g}",
                        f"{r['min_dec']:g}..{r['max_dec']:g}",
                        f"{r['box_size_deg']:g}",
                        "yes" if r["test_mode"] else "no",
                        r["dvo_location"] or "-",
                    )
                    for r in rows
                ],
                ("CONFIG", "ACTIVE", "TYPES", "PRODUCT", "RA", "DEC", "BOX", "TEST", "DVO"),
            )
        )
        return EXIT_OK

    return await with_ipptopsps(settings, go)


async def _all(db: Database) -> list[dict[str, Any]]:
    return [{"name": r["name"], **configs.from_row(r)} for r in await db.fetch_all(Q.psps_configs)]


async def _named(db: Database, config: str) -> str:
    """The config a command works on; ``edit`` asks for one and its fields first (seed 003:
    every program takes a config name, ``all`` or ``edit``)."""
    if config == "edit":
        return await configs.edit(db, None, ask_line, print)
    return config


async def psps_queue(settings: Settings, args: argparse.Namespace) -> int:
    """Queue the config's items; with --every, again every so many hours until stopped."""
    from shared.psps import queue  # reads DVO files: imported when used

    async def go(dbs: Databases) -> int:
        args.config = await _named(dbs.ipptopsps, args.config)
        while True:
            print(await queue.queue_and_say(dbs, args.config, settings.psps_max_attempts))
            if not args.every:
                return EXIT_OK
            await asyncio.sleep(args.every * 3600)

    return await with_dbs(settings, go)


async def psps_init(settings: Settings, args: argparse.Namespace) -> int:
    """Build and publish the config's IN batch, once."""
    from shared.psps import publish  # astropy: imported when used

    async def go(dbs: Databases) -> int:
        args.config = await _named(dbs.ipptopsps, args.config)
        cfg = await configs.load(dbs.ipptopsps, args.config)
        made = await publish.in_batch(dbs, cfg, Path(settings.var_dir))
        print(made.describe(cfg))
        return EXIT_OK

    return await with_dbs(settings, go)


def _deleted(row: Row) -> str:
    """Which copies are deleted: ds (DataStore), dx (DXLayer), local; '!' marks a failure."""
    marks = []
    for target, short in (("datastore", "ds"), ("dxlayer", "dx"), ("local", "local")):
        state = row[f"deleted_{target}"]
        if state != "pending":
            marks.append(short + ("!" if state == "failed" else ""))
    return ",".join(marks) or "-"


async def psps_batches(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = await db.fetch_all(Q.psps_batches, config=args.config, type=args.type)
        if args.json:
            print_json(rows)
            return EXIT_OK
        if not rows:
            print(f"{args.config}: no batches")
            return EXIT_OK
        print(
            table(
                [
                    (
                        r["name"],
                        r["type"],
                        r["item_id"],
                        r["processed"],
                        r["loaded_to_datastore"],
                        r["loaded_to_odm"],
                        r["merge_worthy"],
                        r["merged"],
                        _deleted(r),
                        r["detections"],
                        r["duplicates"],
                        r["fileset"] or "-",
                        (r["note"] or "")[:60],
                    )
                    for r in rows
                ],
                (
                    "BATCH",
                    "TYPE",
                    "ITEM",
                    "PROCESSED",
                    "DATASTORE",
                    "ODM",
                    "MERGE_WORTHY",
                    "MERGED",
                    "DELETED",
                    "DETECTIONS",
                    "DISCARDED",
                    "FILESET",
                    "NOTE",
                ),
            )
        )
        return EXIT_OK

    return await with_ipptopsps(settings, go)


async def _report(settings: Settings, work: Callable[[Databases], Awaitable[operations.Outcome]]) -> int:
    async def go(dbs: Databases) -> int:
        outcome = await work(dbs)
        print(outcome.text)
        return EXIT_OK if outcome.ok else EXIT_FAILED

    return await with_dbs(settings, go)


async def psps_remove_batch(settings: Settings, args: argparse.Namespace) -> int:
    """Remove one batch or a range from the DataStore and record deleted_datastore."""
    return await _report(
        settings, lambda dbs: operations.remove_batches(dbs, args.config, args.first, args.last)
    )


async def psps_purge(settings: Settings, args: argparse.Namespace) -> int:
    """Mark batches purged: the batch cleaner then removes every copy of them."""
    return await _report(
        settings, lambda dbs: operations.purge_batches(dbs.ipptopsps, args.config, args.first, args.last)
    )


async def psps_requeue(settings: Settings, args: argparse.Namespace) -> int:
    """Every failed item of the config back in the queue."""
    return await _report(settings, lambda dbs: operations.requeue_failed(dbs.ipptopsps, args.config))


def add_commands(top: Any) -> None:
    psps = top.add_parser("psps", help="PSPS loading: configs").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    config = psps.add_parser("config", help="loading configurations").add_subparsers(
        dest="what", required=True, metavar="ACTION"
    )
    p = config.add_parser("edit", help="create or change a config, prompting field by field")
    p.add_argument("name", nargs="?", help="the config (asked for when not given)")
    p.set_defaults(handler=config_edit)
    p = config.add_parser("set", help="change fields without prompts: key=value ...")
    p.add_argument("name")
    p.add_argument(
        "assignments", nargs="+", metavar="key=value", help=f"fields: {', '.join(configs.FIELD_NAMES)}"
    )
    p.set_defaults(handler=config_set)
    p = config.add_parser("list", help="every config (--active: only the active ones)")
    p.add_argument("--active", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=config_list)
    p = psps.add_parser("queue", help="queue the config's items (P2, ST, OB) in sky stripes")
    p.add_argument("config", help="a config name, or edit (ask for one and its fields first)")
    p.add_argument("--every", type=float, metavar="HOURS", help="queue again every HOURS hours until stopped")
    p.set_defaults(handler=psps_queue)
    p = psps.add_parser("init", help="build and publish the config's IN batch (once)")
    p.add_argument("config", help="a config name, or edit (ask for one and its fields first)")
    p.set_defaults(handler=psps_init)
    p = psps.add_parser("batches", help="the config's batches and their life-cycle states")
    p.add_argument("config")
    p.add_argument("--type", choices=("IN", "P2", "ST", "OB"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=psps_batches)
    for name, handler, text in (
        ("remove-batch", psps_remove_batch, "remove one batch (or a range) from the DataStore and record it"),
        ("purge", psps_purge, "mark batches purged: every copy of them is removed"),
    ):
        p = psps.add_parser(name, help=text)
        p.add_argument("config")
        p.add_argument("first", metavar="FIRST", help="a batch name, e.g. B00000001")
        p.add_argument("last", metavar="LAST", nargs="?", help="the last batch of a range")
        p.set_defaults(handler=handler)
    p = psps.add_parser("requeue", help="put every failed item of the config back in the queue")
    p.add_argument("config")
    p.set_defaults(handler=psps_requeue)
