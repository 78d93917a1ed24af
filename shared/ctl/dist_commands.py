"""``ippctl ds ...`` and ``ippctl dist ...``: the DataStore and distribution commands."""

from __future__ import annotations

import argparse
from typing import Any

from shared.core.cli import EXIT_OK
from shared.core.secrets import read_secret_file
from shared.core.settings import Settings
from shared.ctl.output import print_json, table, with_db
from shared.db.database import Database
from shared.db.queries import Q
from shared.distribution import datastore, mirror
from shared.distribution.datastore import DataStoreError, NotFound
from shared.processing import runs
from shared.processing.stages import STAGES

LIFECYCLE = tuple(STAGES)


# -- ds ------------------------------------------------------------------------------------


async def ds_product_add(settings: Settings, args: argparse.Namespace) -> int:
    """``dsprodtool --add NAME --type T --description D [--ps0 L ... --ps7 L]``."""
    labels = [getattr(args, f"ps{i}") for i in range(datastore.MAX_COLUMNS)]
    if args.columns and any(labels):
        raise DataStoreError("give the column labels either as --columns or as --ps0..--ps7, not both")
    columns = [c for c in (args.columns or "").split(",") if c] or _leading(labels)

    async def go(db: Database) -> int:
        await datastore.add_product(db, args.name, args.type, args.description, columns)
        print(
            f"product {args.name} ({datastore.product_type(args.type)}) added"
            + (f", columns {', '.join(columns)}" if columns else "")
        )
        return EXIT_OK

    return await with_db(settings, go)


def _leading(labels: list[str | None]) -> list[str]:
    """--ps0..--ps7 up to the first one not given (a gap would shift the columns)."""
    given = [label for label in labels if label]
    if labels[: len(given)] != given:
        raise DataStoreError("--ps0..--ps7 must be given in order, without gaps")
    return given


async def ds_ls(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        if args.product is None:
            print(await datastore.root_listing(db), end="")
        elif args.fileset is None:
            prod = await datastore.product(db, args.product)
            rows = await db.fetch_all(Q.ds_filesets_all, prod_id=prod["prod_id"])
            if args.json:
                print_json(rows)
            elif rows:
                print(
                    table(
                        [
                            (
                                r["fileset_name"],
                                datastore.ds_time(r["reg_time"]),
                                r["type"],
                                r["files"],
                                r["bytes"],
                                "hidden" if r["hide"] else "",
                            )
                            for r in rows
                        ],
                        ("FILESET", "REGISTERED", "TYPE", "FILES", "BYTES", ""),
                    )
                )
            else:
                print(f"product {args.product} has no filesets")
        else:
            print(await datastore.fileset_listing(db, args.product, args.fileset), end="")
        return EXIT_OK

    return await with_db(settings, go)


async def ds_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Hide a fileset from the DataStore; with --rm also delete its rows and files."""

    async def go(db: Database) -> int:
        prod = await datastore.product(db, args.product)
        row = await datastore.fileset_row(db, prod["prod_id"], args.fileset)
        if row is None:
            raise NotFound(f"product {args.product!r} has no fileset {args.fileset!r}")
        if not args.rm:
            await datastore.hide_fileset(db, prod["prod_id"], row["fileset_id"])
            print(f"{args.product}/{args.fileset}: hidden (files kept; --rm deletes them)")
            return EXIT_OK
        deleted = await datastore.remove_fileset(db, args.product, args.fileset)
        print(f"{args.product}/{args.fileset}: removed, {deleted} files deleted")
        return EXIT_OK

    return await with_db(settings, go)


# -- dist ----------------------------------------------------------------------------------


async def dist_queue(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        await datastore.product(db, args.product)
        run = await runs.get_run(db, args.stage, args.id)
        added = await db.execute(
            Q.dist_queue,
            target_id=None,
            stage=args.stage,
            stage_id=args.id,
            label=run["label"],
            clean=int(args.clean),
            product=args.product,
            no_magic=int(args.no_magic),
        )
        row = await db.fetch_one(
            Q.dist_run_get, product=args.product, stage=args.stage, stage_id=args.id, clean=int(args.clean)
        )
        assert row is not None
        if added:
            print(f"{args.stage} {args.id}: queued for {args.product} as dist {row['dist_id']}")
        else:
            print(
                f"{args.stage} {args.id}: already queued for {args.product} as dist "
                f"{row['dist_id']} ({row['state']}" + (f": {row['note']}" if row["note"] else "") + ")"
            )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_target_add(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        await datastore.product(db, args.product)
        target = await db.insert(
            Q.dist_target_add,
            dist_group=args.dist_group,
            filter=None,
            stage=args.stage,
            clean=int(args.clean),
            product=args.product,
            no_magic=int(args.no_magic),
        )
        unmagicked = " (unmagicked too: --no-magic)" if args.no_magic else " (once destreaked)"
        print(
            f"target {target}: full {args.stage} runs of dist_group {args.dist_group} -> {args.product}"
            + unmagicked
        )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_ls(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows = await db.fetch_all(Q.dist_runs, limit=args.limit)
        waiting = await db.fetch_all(Q.dist_waiting_destreak)
        if args.json:
            print_json(rows)
            return EXIT_OK
        print(
            table(
                [
                    (
                        r["dist_id"],
                        r["stage"],
                        r["stage_id"],
                        "yes" if r["clean"] else "",
                        r["product"],
                        f"{r['state']} (waits for destreak)" if r["waits_destreak"] else r["state"],
                        r["fileset_name"] or "-",
                        r["note"] or "",
                    )
                    for r in rows
                ],
                ("DIST", "STAGE", "ID", "CLEAN", "PRODUCT", "STATE", "FILESET", "NOTE"),
            )
        )
        for w in waiting:
            print(
                f"{w['runs']} {w['stage']} run(s) for {w['product']} wait for their destreak "
                "(magicked <= 0); a target or queue with --no-magic ships runs unmagicked"
            )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_source_add(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        datastore.check_name("source", args.name)
        datastore.check_name("product", args.product)
        if not args.uri.startswith(("http://", "https://")):
            raise DataStoreError(
                f"--uri {args.uri!r} is not an http(s) URL of a DataStore (e.g. http://host:8081/ds)"
            )
        token = read_secret_file(args.token_file, "--token-file") if args.token_file else None
        await db.execute(Q.rc_source_add, name=args.name, uri=args.uri, product=args.product, token=token)
        print(
            f"source {args.name}: {args.uri} product {args.product}" + (" (with its token)" if token else "")
        )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_source_token(settings: Settings, args: argparse.Namespace) -> int:
    """Give a source its own token (from a file), or take it away (``--clear``)."""

    async def go(db: Database) -> int:
        token = None if args.clear else read_secret_file(args.token_file, "--token-file")
        if not any(r["name"] == args.name for r in await db.fetch_all(Q.rc_sources)):
            raise DataStoreError(f"no source {args.name!r} (ippctl dist source ls)")
        await db.execute(Q.rc_source_token, name=args.name, token=token)
        print(
            f"source {args.name}: " + ("its token is removed, none is sent" if token is None else "token set")
        )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_sources(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows: list[Any] = await db.fetch_all(Q.rc_sources)
        if args.json:
            print_json(rows)
            return EXIT_OK
        print(
            table(
                [
                    (
                        r["name"],
                        r["status_uri"],
                        r["product"],
                        r["last_fileset"] or "-",
                        r["state"],
                        "yes" if r["has_token"] else "-",
                        r["note"] or "",
                    )
                    for r in rows
                ],
                ("SOURCE", "URI", "PRODUCT", "LAST FILESET", "STATE", "TOKEN", "NOTE"),
            )
        )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_failed(settings: Settings, args: argparse.Namespace) -> int:
    """The filesets a mirror could not import, with their reasons and next attempt."""

    async def go(db: Database) -> int:
        rows: list[Any] = await db.fetch_all(Q.rc_failed, source=args.source, limit=args.limit)
        if args.json:
            print_json(rows)
            return EXIT_OK
        if not rows:
            print("no failed filesets")
            return EXIT_OK
        print(
            table(
                [
                    (r["source"], r["name"], r["attempts"], r["retry_at"] or "-", r["note"] or "")
                    for r in rows
                ],
                ("SOURCE", "FILESET", "ATTEMPTS", "NEXT TRY", "REASON"),
            )
        )
        return EXIT_OK

    return await with_db(settings, go)


async def dist_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Try a failed fileset again on the mirror's next pass, without waiting for its backoff."""

    async def go(db: Database) -> int:
        print(await mirror.retry_failed(db, args.name, args.source))
        return EXIT_OK

    return await with_db(settings, go)


def add_commands(top: Any) -> None:
    """The ds and dist command groups."""
    ds = top.add_parser("ds", help="the DataStore: products and filesets").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    prod = ds.add_parser("product", help="products").add_subparsers(
        dest="what", required=True, metavar="ACTION"
    )
    p = prod.add_parser("add", help="add a product")
    p.add_argument("name")
    p.add_argument(
        "--type",
        required=True,
        choices=(*datastore.PRODUCT_TYPES, *datastore.OLD_PRODUCT_TYPES),
        metavar="TYPE",
        help=f"one the IPP's DataStore client knows: {', '.join(datastore.PRODUCT_TYPES)} "
        "(dist, psps and other are read as ipp-dist, IPP-PSPS and ipp-misc)",
    )
    p.add_argument("--description", required=True)
    p.add_argument(
        "--columns",
        help="labels of the product's fileset columns, comma separated "
        "(e.g. target_id,stage,stage_id,exp_name)",
    )
    for i in range(datastore.MAX_COLUMNS):
        p.add_argument(
            f"--ps{i}", metavar="LABEL", help=f"the label of fileset column {i}, as dsprodtool takes it"
        )
    p.set_defaults(handler=ds_product_add)
    p = ds.add_parser("ls", help="products; a product's filesets; a fileset's files")
    p.add_argument("product", nargs="?")
    p.add_argument("fileset", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=ds_ls)
    p = ds.add_parser("remove", help="hide a fileset (--rm: delete it and its files)")
    p.add_argument("product")
    p.add_argument("fileset")
    p.add_argument("--rm", action="store_true")
    p.set_defaults(handler=ds_remove)

    dist = top.add_parser("dist", help="distribution: queue runs, targets, mirror sources").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = dist.add_parser("queue", help="queue a run for distribution")
    p.add_argument("--stage", required=True, choices=LIFECYCLE)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--product", required=True)
    p.add_argument("--clean", action="store_true", help="ship it as cleaned (what cleanup keeps)")
    p.add_argument(
        "--no-magic",
        action="store_true",
        help="ship runs that were never destreaked too (magicked <= 0): only for a target that "
        "explicitly takes unmagicked data; without it a run waits for its destreak",
    )
    p.set_defaults(handler=dist_queue)
    p = dist.add_parser("ls", help="distribution runs, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=dist_ls)
    target = dist.add_parser("target", help="standing targets").add_subparsers(
        dest="what", required=True, metavar="ACTION"
    )
    p = target.add_parser("add", help="queue every full run of a dist_group and stage")
    p.add_argument("--dist-group", required=True)
    p.add_argument("--stage", required=True, choices=LIFECYCLE)
    p.add_argument("--product", required=True)
    p.add_argument("--clean", action="store_true")
    p.add_argument(
        "--no-magic",
        action="store_true",
        help="ship runs that were never destreaked too (magicked <= 0): only for a target that "
        "explicitly takes unmagicked data; without it a run waits for its destreak",
    )
    p.set_defaults(handler=dist_target_add)
    source = dist.add_parser("source", help="at a mirror: the DataStores it imports from").add_subparsers(
        dest="what", required=True, metavar="ACTION"
    )
    p = source.add_parser("add", help="import a product of a remote DataStore")
    p.add_argument("name")
    p.add_argument("--uri", required=True, help="the DataStore root, e.g. http://host:8081/ds")
    p.add_argument("--product", required=True)
    p.add_argument(
        "--token-file",
        metavar="F",
        help="a file holding the bearer token this DataStore wants (sent to it only)",
    )
    p.set_defaults(handler=dist_source_add)
    p = source.add_parser("token", help="set (from a file) or remove a source's own DataStore token")
    p.add_argument("name")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--token-file", metavar="F", help="a file holding the token (one line, not world-readable)"
    )
    given.add_argument("--clear", action="store_true", help="send this source no token")
    p.set_defaults(handler=dist_source_token)
    p = source.add_parser("ls", help="sources and the last fileset imported from each")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=dist_sources)
    p = dist.add_parser(
        "failed", help="at a mirror: filesets that failed, with the reason and when each is tried again"
    )
    p.add_argument("--source")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=dist_failed)
    p = dist.add_parser("retry", help="at a mirror: try a failed fileset again now")
    p.add_argument("name")
    p.add_argument("--source")
    p.set_defaults(handler=dist_retry)
