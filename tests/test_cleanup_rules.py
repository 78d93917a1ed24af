"""Cleanup deletes exactly what docs/lifecycles.md's table says, for every stage and target.

The table was written from the IPP's own cleanup script and file rules (public IPP source
``ps-ipp/ipp-trunk-20250502``: ``ippScripts/scripts/ipp_cleanup.pl`` for what each mode
deletes, ``ippconfig/recipes/filerules-split.mdc`` for the names), with the places where the
project deliberately differs marked there. This test reads that table, not the code's own
rules: it builds each expected file name from the table's name pattern, cleans one run per
stage and target in one agent pass over a generated survey, and compares every file of
storage before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from shared.processing import runs
from shared.storage.store import Storage
from sim.logs import ipp_log
from tests.helpers import ROOT, AgentProcess
from tests.survey_fixture import SurveySite, drop_survey, make_survey

STAGES = ("chip", "camera", "warp", "diff", "stack")
TARGETS = ("cleaned", "scrubbed", "purged")
GOALS = {"cleaned": "goto_cleaned", "scrubbed": "goto_scrubbed", "purged": "goto_purged"}
#: One run per stage and target: runs 1-3 (chip run 1 is destreaked: it has recovery copies);
#: camera runs 2-4, so that chip run 1, cleaned, keeps a full camera run with a good smf.
RUN_OF = {
    (stage, target): number + (stage == "camera")
    for stage in STAGES
    for number, target in enumerate(TARGETS, start=1)
}
ACTIONS = ("delete", "keep", "gzip", "delete if good smf")
#: Files an update of a run writes about itself (ipp_cleanup.pl handles them): made here as
#: an earlier update would have left them, so the table's rows for them are exercised.
FROM_UPDATE = ("LOG.IMFILE.UPDATE", "LOG.EXP.UPDATE", "SKYCELL.STATS.UPDATE")

RECOVERY = Query(
    "t_recovery",
    "SELECT f.component, f.recovery_path_base AS base, f.backup_path_base AS backup FROM magicDSFile f "
    "JOIN magicDSRun r USING (magic_ds_id) WHERE r.stage = %(stage)s "
    "AND r.stage_id = %(id)s",
    "test",
)
CHIPS = Query(
    "t_chips",
    "SELECT p.class_id FROM camRun r JOIN chipProcessedImfile p "
    "ON p.chip_id = r.chip_id WHERE r.cam_id = %(id)s",
    "test",
)
INPUTS = Query("t_inputs", "SELECT COUNT(*) FROM stackInputSkyfile WHERE stack_id = %(id)s", "test")
_numbers = itertools.count()


@dataclass(frozen=True)
class Row:
    stage: str
    rule: str
    name: str
    actions: dict[str, str]
    #: "yes": its destreak recovery copy goes with it; "censored": it is kept, and the two
    #: copies its destreak left (backup and recovery) go at any cleanup; "": neither
    recovery: str
    ipp: str


def table() -> list[Row]:
    """The rows of docs/lifecycles.md's 'What cleanup deletes' table."""
    text = (ROOT / "docs" / "lifecycles.md").read_text()
    section = text.split("## What cleanup deletes", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or cells[0] not in STAGES:
            continue
        stage, rule, name, cleaned, scrubbed, purged, recovery, ipp = cells
        actions = dict(zip(TARGETS, (cleaned, scrubbed, purged), strict=True))
        assert set(actions.values()) <= set(ACTIONS), line
        assert recovery in ("", "yes", "censored"), line
        rows.append(Row(stage, rule, name.strip("`"), actions, recovery, ipp))
    return rows


TABLE = table()


def path_of(key: str) -> str:
    """The storage path of a neb:// key (volume preference dropped)."""
    return key.split("://", 1)[1].split("/", 1)[1]


def names(row: Row, base: str, component: str | None, chips: list[str], inputs: int) -> list[str]:
    """Every file the row names for one component, from the table's pattern alone."""
    pattern = row.name.replace("{OUTPUT}", base)
    parts = [pattern]
    if "{CHIP.NAME}" in pattern:
        parts = [pattern.replace("{CHIP.NAME}", c) for c in ([component] if component else chips)]
    if "{FILE.INDEX}" in pattern:
        parts = [p.replace("{FILE.INDEX}", str(i)) for p in parts for i in range(inputs)]
    return [path_of(p) for p in parts]


@dataclass
class Case:
    stage: str
    target: str
    run_id: int
    #: storage path -> (table row, what it is: "file", "recovery" (goes with the file) or
    #: "copy" (a censored file's destreak copy: goes at any cleanup))
    files: dict[str, tuple[Row, str]]


@dataclass
class Outcome:
    site: SurveySite
    cases: list[Case]
    before: dict[str, str]  # path -> md5 before the agent ran
    after: dict[str, str]
    logs: dict[str, bytes]  # path of a log -> its bytes before
    agent: AgentProcess


async def _case(db: Database, storage: Storage, stage: str, target: str) -> Case:
    run_id = RUN_OF[(stage, target)]
    rows = [r for r in TABLE if r.stage == stage]
    chips = [str(r["class_id"]) for r in await db.fetch_all(CHIPS, id=run_id)] if stage == "camera" else []
    inputs = int(await db.fetch_val(INPUTS, id=run_id) or 0) if stage == "stack" else 0
    destreak = await db.fetch_all(RECOVERY, stage=stage, id=run_id)
    # a camera run's one component is 'exposure' in magicDSFile (it has no class_id)
    recovery = {(None if r["component"] == "exposure" else r["component"]): r for r in destreak}
    files: dict[str, tuple[Row, str]] = {}
    for comp in await runs.components(db, stage, run_id):
        base, name = comp.path_base, comp.component
        for row in rows:
            for path in names(row, base, name, chips, inputs):
                files.setdefault(path, (row, "file"))
            if row.recovery == "yes" and name in recovery:
                for path in names(row, recovery[name]["base"], name, chips, inputs):
                    files[path] = (row, "recovery")
            if row.recovery == "censored" and name in recovery:
                for copy in (recovery[name]["base"], recovery[name]["backup"]):
                    for path in names(row, copy, name, chips, inputs):
                        files[path] = (row, "copy")
        for row in rows:
            if row.rule in FROM_UPDATE:
                (path,) = names(row, base, name, chips, inputs)
                data = ipp_log(run_id, 4000) if row.name.endswith("log.update") else b"N 1\n"
                await storage.create(f"neb://any/{path}", data)
        if target == "scrubbed":  # a scrub is for components whose config dump is gone
            (config,) = [r for r in rows if r.rule.endswith("CONFIG")]
            for path in names(config, base, name, chips, inputs):
                await storage.delete(f"neb://any/{path}", missing_ok=True)
    await runs.set_state(db, stage, GOALS[target], run_id=run_id)
    return Case(stage, target, run_id, files)


async def _everything(storage: Storage) -> dict[str, str]:
    return {str(o["ext_id"]): str(o["md5sum"]) for o in await storage.list("", limit=10**6)}


@pytest.fixture(scope="module")
async def outcome(test_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Outcome]:
    tmp = tmp_path_factory.mktemp("rules")
    site = await make_survey(test_dsn, f"rules{next(_numbers)}", tmp, exposures=4, chips=2, seed=5)
    db = await Database.connect(site.settings, pool_size=4)
    try:
        storage = Storage(db)
        cases = [await _case(db, storage, s, t) for s in STAGES for t in TARGETS]
        before = await _everything(storage)
        logs = {
            p: await storage.read_bytes(f"neb://any/{p}")
            for c in cases
            for p, (row, _) in c.files.items()
            if p in before and any(a == "gzip" for a in row.actions.values())
        }
        agent = AgentProcess("cleanup", site.dsn, tmp, "--once")
        code = await agent.wait(timeout_s=300)
        assert code == 0, agent.output()
        yield Outcome(site, cases, before, await _everything(storage), logs, agent)
    finally:
        await db.close()
        await drop_survey(site)


def _expected_gone(case: Case, before: dict[str, str]) -> dict[str, str]:
    """path -> action for the case's files that existed and that its target removes."""
    gone = {}
    for path, (row, kind) in case.files.items():
        action = "delete" if kind == "copy" else row.actions[case.target]
        if path in before and action != "keep":
            gone[path] = action
    return gone


def test_the_table_names_every_rule_the_agent_has_and_no_other() -> None:
    from shared.processing.filerules import RULES  # the code's rules, only to check the table is whole

    code = {(r.stage, r.name) for r in RULES if r.stage in STAGES}
    assert {(r.stage, r.rule) for r in TABLE} == code


def test_every_row_of_the_table_had_a_file_to_act_on(outcome: Outcome) -> None:
    """So that no row is checked vacuously: each row named a file that existed, for each
    target, in the survey (a scrubbed run's config dumps were removed first: a scrub is for
    runs without them)."""
    for case in outcome.cases:
        rows = {row.rule for path, (row, _) in case.files.items() if path in outcome.before}
        wanted = {
            r.rule
            for r in TABLE
            if r.stage == case.stage and not (case.target == "scrubbed" and r.rule.endswith("CONFIG"))
        }
        assert rows == wanted, (case.stage, case.target, sorted(wanted - rows))
        if case.stage == "chip" and case.run_id == 1:  # the survey destreaks chips only
            assert any(rec and p in outcome.before for p, (_, rec) in case.files.items())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("stage", STAGES)
def test_cleanup_deletes_and_keeps_what_the_table_says(outcome: Outcome, stage: str, target: str) -> None:
    (case,) = [c for c in outcome.cases if c.stage == stage and c.target == target]
    before, after = outcome.before, outcome.after
    for path, (row, kind) in sorted(case.files.items()):
        if path not in before:
            continue
        action = "delete" if kind == "copy" else row.actions[target]
        what = f"{stage} {case.run_id} -> {target}: {row.rule} {path}"
        if action == "keep":
            assert after.get(path) == before[path], f"{what} should be kept"
        elif action in ("delete", "delete if good smf"):
            # the survey's smfs are all good, so a clean deletes the cmf and b1 too
            assert path not in after, f"{what} should be deleted"
        else:
            assert path not in after, f"{what} should be replaced by its .gz"
            assert path + ".gz" in after, f"{what}: no {path}.gz"
            assert hashlib.md5(outcome.logs[path]).hexdigest() == before[path]
        assert not (kind == "recovery" and action == "keep"), what


async def test_compressed_logs_read_back_with_gunzip(outcome: Outcome) -> None:
    db = await Database.connect(outcome.site.settings, pool_size=2)
    try:
        storage = Storage(db)
        for path, original in sorted(outcome.logs.items()):
            packed = await storage.read_bytes(f"neb://any/{path}.gz")
            assert packed[:2] == b"\x1f\x8b", path  # a gzip member, as zcat wants
            assert gzip.decompress(packed) == original, path
    finally:
        await db.close()


def test_nothing_outside_the_table_was_deleted_or_made(outcome: Outcome) -> None:
    gone_expected: dict[str, str] = {}
    for case in outcome.cases:
        gone_expected.update(_expected_gone(case, outcome.before))
    gone = set(outcome.before) - set(outcome.after)
    made = set(outcome.after) - set(outcome.before)
    assert gone == set(gone_expected)
    cleanup_logs = {p for p in made if re.search(r"\.cleanup(\.\d+)?\.log\.gz$", p)}
    assert made - cleanup_logs == {p + ".gz" for p, a in gone_expected.items() if a == "gzip"}
    assert len(cleanup_logs) == len(outcome.cases)


async def test_every_run_reached_its_target_and_says_so_in_its_log(outcome: Outcome) -> None:
    db = await Database.connect(outcome.site.settings, pool_size=2)
    try:
        for case in outcome.cases:
            run = await runs.get_run(db, case.stage, case.run_id)
            assert (run["state"], case.stage, case.run_id) == (case.target, case.stage, case.run_id)
    finally:
        await db.close()
    done = {(e["stage"], e["run_id"]) for e in outcome.agent.events("cleanup_done")}
    assert done == {(c.stage, c.run_id) for c in outcome.cases}


def test_the_table_marks_the_deliberate_differences_from_the_ipp() -> None:
    """Seed 000's proposals the project adopts are marked as differing from the IPP's script:
    chip trace files, warp psf, gzip instead of bzip2."""
    differ = {(r.stage, r.rule) for r in TABLE if r.ipp.startswith("differs")}
    assert {("chip", "TRACE.IMFILE"), ("warp", "PSPHOT.PSF.SKY.SAVE"), ("chip", "LOG.IMFILE")} <= differ
    scrub = {r.rule: r.actions["scrubbed"] for r in TABLE if r.stage == "chip"}
    assert scrub["PSPHOT.OUTPUT"] == scrub["PPIMAGE.BIN1"] == "keep"  # no catalog lost
