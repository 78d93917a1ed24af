"""PSPS loading configurations: one row per config in ``psps_config``.

Every field has a type, a default and a check; a value that fails its check is refused with
an error naming the field and the value. ``ippctl psps config edit NAME`` prompts field by
field (return keeps the value shown), ``set NAME key=value ...`` changes fields without
prompts, ``list`` shows them. Agents read the config from the database on every pass, so an
edit takes effect without a restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.core.errors import IppError
from shared.db.database import Database, Row
from shared.db.queries import Q
from shared.distribution import datastore
from shared.psps import BATCH_TYPES

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
#: What the batch cleaner may delete, per ODM status (issue 7's defaults).
DELETION_TARGETS = ("datastore", "dxlayer", "local")
DELETION_STATES = ("merge_worthy", "merged", "failed")
DEFAULT_POLICY = "merge_worthy:datastore,dxlayer;failed:datastore,dxlayer;merged:local"


class ConfigError(IppError):
    """A loading config or one of its values that is not valid."""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError("expected yes/no (true/false, 1/0)")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _epoch(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("T", " "))
    except ValueError:
        raise ValueError("expected a date and time, e.g. 2009-01-01 00:00:00") from None


def _types(text: str) -> str:
    parts = [p.strip().upper() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in BATCH_TYPES]
    if not parts or unknown:
        raise ValueError(f"expected batch types among {', '.join(BATCH_TYPES)}")
    return ",".join(p for p in BATCH_TYPES if p in parts)


def parse_policy(text: str) -> dict[str, tuple[str, ...]]:
    """``state:target,target;state:...`` -> {state: targets} (ValueError if malformed)."""
    policy: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        state, sep, targets = part.partition(":")
        wanted = tuple(t.strip() for t in targets.split(",") if t.strip())
        if not sep or state.strip() not in DELETION_STATES or any(t not in DELETION_TARGETS for t in wanted):
            raise ValueError(
                f"expected state:target,... with states {', '.join(DELETION_STATES)} "
                f"and targets {', '.join(DELETION_TARGETS)}; got {part!r}"
            )
        policy[state.strip()] = wanted
    return policy


def _policy(text: str) -> str:
    parse_policy(text)
    return text.strip()


def _text(limit: int) -> Callable[[str], str]:
    def check(text: str) -> str:
        if len(text) > limit:
            raise ValueError(f"at most {limit} characters")
        return text.strip()

    return check


def _fileset_type(text: str) -> str:
    """A fileset type the IPP's DataStore client lists (the DXLayer never sees others)."""
    value = text.strip()
    value = "IPP_PSPS" if value == "psps" else value  # the name earlier versions used
    if value not in datastore.FILESET_TYPES:
        raise ValueError("expected a fileset type the IPP's DataStore client knows, such as IPP_PSPS")
    return value


def _survey(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise ValueError("expected 0..255")
    return value


def _box(text: str) -> float:
    value = _float(text)
    if not 0 < value <= 30:
        raise ValueError("expected a box size above 0 and at most 30 degrees")
    return value


def _ra(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 360:
        raise ValueError("expected 0..360 degrees")
    return value


def _dec(text: str) -> float:
    value = _float(text)
    if not -90 <= value <= 90:
        raise ValueError("expected -90..90 degrees")
    return value


@dataclass(frozen=True)
class Field:
    name: str
    parse: Callable[[str], Any]
    default: Callable[[str], Any]
    help: str


FIELDS: tuple[Field, ...] = (
    Field(
        "datastore_product", _text(64), lambda n: f"PSPS_{n}", "DataStore product batches are published on"
    ),
    Field(
        "datastore_type", _fileset_type, lambda n: "IPP_PSPS", "type of the filesets batches are published as"
    ),
    Field("datastore_publish", _bool, lambda n: False, "publish batches (no: build them only)"),
    Field("dvo_label", _text(100), lambda n: "", "addRun label (dvodb) whose merged runs are loaded"),
    Field("dvo_location", _text(1000), lambda n: "", "the DVO catalog directory"),
    Field("min_ra", _ra, lambda n: 0.0, "sky limits (degrees)"),
    Field("max_ra", _ra, lambda n: 360.0, ""),
    Field("min_dec", _dec, lambda n: -90.0, ""),
    Field("max_dec", _dec, lambda n: 90.0, ""),
    Field("box_size_deg", _box, lambda n: 1.0, "side of the boxes a stripe is cut into"),
    Field("epoch", _epoch, lambda n: datetime(2009, 1, 1), "items published before this are loaded again"),
    Field("survey_id", _survey, lambda n: 0, "PSPS surveyID"),
    Field("batch_types", _types, lambda n: "P2,ST,OB", "batch types this config loads"),
    Field("test_mode", _bool, lambda n: False, "first exposure, one chip, missing values tolerated"),
    Field(
        "deletion_policy", _policy, lambda n: DEFAULT_POLICY, "what the batch cleaner deletes per ODM status"
    ),
    Field("active", _bool, lambda n: True, "loaders with --config all take this config"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
#: The names earlier versions of this project gave the sky limits.
ALIASES = {"ra_min": "min_ra", "ra_max": "max_ra", "dec_min": "min_dec", "dec_max": "max_dec"}


def field(name: str) -> Field:
    """A field by its name (or an alias of it)."""
    name = ALIASES.get(name, name)
    for f in FIELDS:
        if f.name == name:
            return f
    raise ConfigError(f"unknown config field {name!r} (fields: {', '.join(FIELD_NAMES)})")


def check_name(name: str) -> str:
    if not NAME.match(name) or name == "all":
        raise ConfigError(f"config name {name!r} is not valid (letters, digits, _ . -; not 'all')")
    return name


def defaults(name: str) -> dict[str, Any]:
    return {f.name: f.default(name) for f in FIELDS}


def parse_value(name: str, text: str) -> Any:
    """A field's value from text; ConfigError naming the field (and the alias given)."""
    f = field(name)
    try:
        return f.parse(text)
    except ValueError as exc:
        given = f" (given as {name})" if name != f.name else ""
        raise ConfigError(f"{f.name} = {text!r}{given}: {exc}") from None


def check_whole(name: str, values: Mapping[str, Any]) -> None:
    """Checks across fields: a sky box that is not empty."""
    if values["min_ra"] >= values["max_ra"]:
        raise ConfigError(
            f"config {name}: min_ra {values['min_ra']} must be below max_ra "
            f"{values['max_ra']} (the sky box would be empty)"
        )
    if values["min_dec"] >= values["max_dec"]:
        raise ConfigError(
            f"config {name}: min_dec {values['min_dec']} must be below max_dec "
            f"{values['max_dec']} (the sky box would be empty)"
        )


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def from_row(row: Row) -> dict[str, Any]:
    """A row's field values, for showing and editing (:class:`LoadingConfig` for working)."""
    out = {f.name: row[f.name] for f in FIELDS}
    for f in ("datastore_publish", "test_mode", "active"):
        out[f] = bool(out[f])
    return out


@dataclass(frozen=True)
class LoadingConfig:
    """One loading config as the agents work it, read fresh on every pass."""

    name: str
    datastore_product: str
    datastore_type: str
    datastore_publish: bool
    dvo_label: str
    dvo_location: str
    min_ra: float
    max_ra: float
    min_dec: float
    max_dec: float
    box_size_deg: float
    epoch: datetime
    survey_id: int
    batch_types: str
    test_mode: bool
    deletion_policy: str
    active: bool

    @classmethod
    def from_row(cls, row: Row) -> LoadingConfig:
        values = from_row(row)
        return cls(
            name=str(row["name"]),
            datastore_product=str(values["datastore_product"]),
            datastore_type=str(values["datastore_type"]),
            datastore_publish=values["datastore_publish"],
            dvo_label=str(values["dvo_label"]),
            dvo_location=str(values["dvo_location"]),
            min_ra=float(values["min_ra"]),
            max_ra=float(values["max_ra"]),
            min_dec=float(values["min_dec"]),
            max_dec=float(values["max_dec"]),
            box_size_deg=float(values["box_size_deg"]),
            epoch=values["epoch"],
            survey_id=int(values["survey_id"]),
            batch_types=str(values["batch_types"]),
            test_mode=values["test_mode"],
            deletion_policy=str(values["deletion_policy"]),
            active=values["active"],
        )

    @property
    def types(self) -> tuple[str, ...]:
        """The batch types it loads."""
        return tuple(t for t in self.batch_types.split(",") if t)


async def get(db: Database, name: str) -> dict[str, Any] | None:
    row = await db.fetch_one(Q.psps_config_get, name=name)
    return None if row is None else from_row(row)


async def load(db: Database, name: str) -> LoadingConfig:
    row = await db.fetch_one(Q.psps_config_get, name=name)
    if row is None:
        raise ConfigError(f"no loading config {name!r} (ippctl psps config list)")
    return LoadingConfig.from_row(row)


async def save(db: Database, name: str, values: Mapping[str, Any]) -> None:
    check_name(name)
    check_whole(name, values)
    params = {k: (int(v) if isinstance(v, bool) else v) for k, v in values.items()}
    before = await get(db, name)
    await db.execute(Q.psps_config_save, name=name, **params)
    if before is not None and before["deletion_policy"] != values["deletion_policy"]:
        await db.execute(Q.batches_uncleaned, config=name)  # the cleaner looks at all again


#: Asks a question and gives the answer (None at the end of input); tells the operator things.
Ask = Callable[[str], str | None]
Say = Callable[[str], None]
#: queue.py's first question, when no config is named (seed 003).
NAME_PROMPT = " * Name for new config, or existing config to edit? "


def prompt(name: str, sqltype: str, value: Any) -> str:
    """The question for one field, as queue.py asked it (seed 003):
    `` * field (sqltype)? `` or `` * field (sqltype) hit return to accept default of: 'X'? ``."""
    shown = _as_typed(value)
    if shown == "":
        return f" * {name} ({sqltype})? "
    return f" * {name} ({sqltype}) hit return to accept default of: '{shown}'? "


def _as_typed(value: Any) -> str:
    """A value as the column holds it: tinyint 0/1, dates without a midnight time."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.strftime(
            "%Y-%m-%d" if value == datetime(value.year, value.month, value.day) else "%Y-%m-%d %H:%M:%S"
        )
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def edit(db: Database, name: str | None, ask: Ask, say: Say) -> str:
    """Create or change a config by asking field by field, as queue.py's ``edit`` did: the
    name first when none is given, then each field with its column type and the current (or
    default) value, which return keeps; a value that is not valid is asked again with the
    reason. Saved only when every field is answered and the whole is valid; its name."""
    while name is None:
        answer = ask(NAME_PROMPT)
        if answer is None:
            raise ConfigError("no config name given (end of input)")
        try:
            name = check_name(answer.strip()) if answer.strip() else None
        except ConfigError as exc:
            say(f"   {exc}")
    check_name(name)
    current = await get(db, name)
    values = current or defaults(name)
    types = {str(r["name"]): str(r["sqltype"]) for r in await db.fetch_all(Q.psps_config_types)}
    say(f"{'editing' if current else 'creating'} loading config {name}")
    for f in FIELDS:
        while True:
            answer = ask(prompt(f.name, types.get(f.name, "?"), values[f.name]))
            text = (answer or "").strip()  # return, or the end of input, keeps the value
            if not text:
                break
            try:
                values[f.name] = parse_value(f.name, text)
                break
            except ConfigError as exc:
                say(f"   {exc}")
    await save(db, name, values)
    say(f"config {name} saved")
    return name


async def set_fields(db: Database, name: str, assignments: Mapping[str, str]) -> dict[str, Any]:
    """Change fields of a config (created with defaults if new); nothing is saved unless
    every value is valid."""
    check_name(name)
    values = await get(db, name) or defaults(name)
    for key, text in assignments.items():
        values[field(key).name] = parse_value(key, text)
    await save(db, name, values)
    return values


async def configs(db: Database, which: str) -> list[LoadingConfig]:
    """One config by name, or every active one for ``all``."""
    if which == "all":
        return [LoadingConfig.from_row(r) for r in await db.fetch_all(Q.psps_configs) if r["active"]]
    return [await load(db, which)]


async def for_each(db: Database, which: str, work: Callable[[LoadingConfig], Awaitable[int]]) -> int:
    """Run ``work`` on one config (or every active one for ``all``) in turn, each read fresh
    from the database (so edits apply at the next pass); the sum of what it returned."""
    total = 0
    for cfg in await configs(db, which):
        total += await work(cfg)
    return total


@dataclass(frozen=True)
class CleanerBatch:
    """A batch the batch cleaner looks at (``cleaner_batches``): PSPS's verdicts so far and,
    per copy (``DELETION_TARGETS``), whether it was deleted and how long ago that was tried."""

    batch_id: int
    name: str
    config: str
    type: str
    fileset: str | None
    fits_path: str | None
    purged: bool
    processed: str
    loaded_to_odm: str
    merge_worthy: str
    merged: str
    #: deleted_<target>: pending, succeeded or failed
    deleted: Mapping[str, str]
    #: seconds since the last deletion attempt of each copy (None: never tried)
    age_s: Mapping[str, float | None]

    @classmethod
    def from_row(cls, row: Row) -> CleanerBatch:
        return cls(
            batch_id=int(row["batch_id"]),
            name=str(row["name"]),
            config=str(row["config"]),
            type=str(row["type"]),
            fileset=row["fileset"],
            fits_path=row["fits_path"],
            purged=bool(row["purged"]),
            processed=str(row["processed"]),
            loaded_to_odm=str(row["loaded_to_odm"]),
            merge_worthy=str(row["merge_worthy"]),
            merged=str(row["merged"]),
            deleted={t: str(row[f"deleted_{t}"]) for t in DELETION_TARGETS},
            age_s={
                t: None if row[f"{t}_age_s"] is None else float(row[f"{t}_age_s"]) for t in DELETION_TARGETS
            },
        )
