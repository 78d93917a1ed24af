"""``ippctl psps config edit|set|list``: PSPS loading configurations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.cli import EXIT_OK
from shared.db import Database
from shared.ippctl import _print_json, _table, _with_db
from shared.psps import configs
from shared.psps.configs import ConfigError
from shared.settings import Settings


async def config_edit(settings: Settings, args: argparse.Namespace) -> int:
    """Prompt field by field with the current (or default) value; return keeps it; a value
    that is not valid is asked again with the reason."""
    async def go(db: Database) -> int:
        configs.check_name(args.name)
        current = await configs.get(db, args.name)
        values = current or configs.defaults(args.name)
        print(f"{'editing' if current else 'creating'} loading config {args.name} "
              "(return keeps the value in brackets)")
        for f in configs.FIELDS:
            while True:
                shown = configs.show(values[f.name])
                hint = f"  ({f.help})" if f.help else ""
                print(f"{f.name} [{shown}]{hint}: ", end="", flush=True)
                answer = sys.stdin.readline()
                if answer == "":  # end of input: keep the rest as they are
                    answer = "\n"
                text = answer.rstrip("\n")
                if not text.strip():
                    break
                try:
                    values[f.name] = configs.parse_value(f.name, text)
                    break
                except ConfigError as exc:
                    print(f"  {exc}")
        await configs.save(db, args.name, values)
        print(f"config {args.name} saved")
        return EXIT_OK
    return await _with_db(settings, go)


async def config_set(settings: Settings, args: argparse.Namespace) -> int:
    assignments: dict[str, str] = {}
    for item in args.assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{item!r} is not key=value")
        configs.field(key.strip())
        assignments[key.strip()] = value

    async def go(db: Database) -> int:
        values = await configs.set_fields(db, args.name, assignments)
        for key in assignments:
            print(f"{args.name}.{key} = {configs.show(values[key])}")
        return EXIT_OK
    return await _with_db(settings, go)


async def config_list(settings: Settings, args: argparse.Namespace) -> int:
    async def go(db: Database) -> int:
        rows: list[dict[str, Any]] = []
        for r in await configs.configs(db, "all") if args.active else await _all(db):
            rows.append(r)
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            print("no loading configs (ippctl psps config edit NAME)")
            return EXIT_OK
        print(_table([(r["name"], "yes" if r["active"] else "no", r["batch_types"],
                       r["datastore_product"], f"{r['ra_min']:g}..{r['ra_max']:g}",
                       f"{r['dec_min']:g}..{r['dec_max']:g}", f"{r['box_size_deg']:g}",
                       "yes" if r["test_mode"] else "no", r["dvo_location"] or "-")
                      for r in rows],
                     ("CONFIG", "ACTIVE", "TYPES", "PRODUCT", "RA", "DEC", "BOX", "TEST", "DVO")))
        return EXIT_OK
    return await _with_db(settings, go)


async def _all(db: Database) -> list[dict[str, Any]]:
    from shared.queries import Q
    return [{"name": r["name"], **configs.from_row(r)} for r in await db.fetch_all(Q.psps_configs)]


def add_commands(top: Any) -> None:
    psps = top.add_parser("psps", help="PSPS loading: configs").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    config = psps.add_parser("config", help="loading configurations").add_subparsers(
        dest="what", required=True, metavar="ACTION")
    p = config.add_parser("edit", help="create or change a config, prompting field by field")
    p.add_argument("name")
    p.set_defaults(handler=config_edit)
    p = config.add_parser("set", help="change fields without prompts: key=value ...")
    p.add_argument("name")
    p.add_argument("assignments", nargs="+", metavar="key=value",
                   help=f"fields: {', '.join(configs.FIELD_NAMES)}")
    p.set_defaults(handler=config_set)
    p = config.add_parser("list", help="every config (--active: only the active ones)")
    p.add_argument("--active", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=config_list)
