"""The update agent on a generated survey: full -> cleaned -> update -> full gives back the
same bytes, inputs are cascaded, and faults leave a clear reason and nothing half done."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from shared.processing import runs
from shared.processing.filerules import config_rule, rule
from shared.processing.runs import ProductFile
from shared.processing.stages import stage
from shared.storage.store import Storage
from tests.helpers import ROOT, AgentProcess, agent_env, eventually
from tests.survey_fixture import SurveySite, survey_site

_numbers = itertools.count()


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for survey in survey_site(test_dsn, f"up{next(_numbers)}", tmp_path, exposures=4, chips=2, seed=11):
        yield survey


def run_query(stage_name: str) -> Query:
    st = stage(stage_name)
    magicked = "0" if stage_name == "stack" else "magicked"
    return Query(
        "t_run",
        f"SELECT state, {magicked} AS magicked, note FROM {st.run_table} WHERE {st.id_column} = %(id)s",
        "test",
    )


async def agent(site: SurveySite, tmp_path: Path, name: str, *args: str, **settings: Any) -> AgentProcess:
    proc = AgentProcess(
        name,
        site.dsn,
        tmp_path,
        "--once",
        *args,
        update_scratch_dir=str(tmp_path / "scratch"),
        update_wait_s=0,
        **settings,
    )
    code = await proc.wait(timeout_s=300)
    assert code == 0, proc.output()
    return proc


async def clean(site: SurveySite, sdb: Database, tmp_path: Path, targets: list[tuple[str, int]]) -> None:
    for stage_name, run_id in targets:
        await runs.set_state(sdb, stage_name, "goto_cleaned", run_id=run_id)
    await agent(site, tmp_path, "cleanup")
    for stage_name, run_id in targets:
        row = await sdb.fetch_one(run_query(stage_name), id=run_id)
        assert row is not None and row["state"] == "cleaned", (stage_name, run_id, row)


async def update_until_full(
    site: SurveySite,
    sdb: Database,
    tmp_path: Path,
    stage_name: str,
    run_id: int,
    passes: int = 6,
    **settings: Any,
) -> list[AgentProcess]:
    """Run `update --once` until the run is full (a cascade needs a pass per level)."""
    done = []
    for _ in range(passes):
        done.append(await agent(site, tmp_path, "update", **settings))
        row = await sdb.fetch_one(run_query(stage_name), id=run_id)
        assert row is not None
        if row["state"] == "full":
            return done
    raise AssertionError(
        f"{stage_name} {run_id} not full after {passes} passes: {row}\n"
        f"last pass:\n{done[-1].output()[-3000:]}"
    )


async def files(sdb: Database, stage_name: str, run_id: int) -> dict[str, ProductFile]:
    return {f.key: f for f in await runs.run_files(sdb, stage_name, run_id, md5=True)}


def assert_same_products(
    before: dict[str, ProductFile], after: dict[str, ProductFile], stage_name: str
) -> int:
    """Every product is back with its original md5, except what update never re-creates (a
    chip's cmf) and logs (kept compressed). Returns how many files were compared."""
    compared = 0
    for key, f in before.items():
        if not f.exists:
            continue
        if f.file_class == "log":
            continue
        if stage_name == "chip" and f.rule == "PSPHOT.OUTPUT":
            assert not after[key].exists or after[key].md5sum == f.md5sum, key
            continue
        assert after[key].exists, f"{key} was not regenerated"
        assert after[key].md5sum == f.md5sum, f"{key}: md5 differs after update"
        compared += 1
    return compared


async def recovery_keys(sdb: Database, chip_id: int) -> list[str]:
    rows = await sdb.fetch_all(
        Query(
            "t_rec",
            "SELECT f.component, f.recovery_path_base AS base FROM magicDSFile f JOIN "
            "magicDSRun r USING (magic_ds_id) WHERE r.stage = 'chip' AND r.stage_id = %(id)s",
            "test",
        ),
        id=chip_id,
    )
    return [
        rule("chip", n).filename(r["base"], r["component"])
        for r in rows
        for n in ("PPIMAGE.CHIP", "PPIMAGE.CHIP.MASK", "PPIMAGE.CHIP.VARIANCE")
    ]


async def md5s(sdb: Database, keys: list[str]) -> dict[str, str]:
    storage = Storage(sdb)
    return {k: (await storage.stat(k)).md5sum for k in keys}


# -- the invariant ---------------------------------------------------------------------------


async def test_destreaked_chip_comes_back_byte_identical_with_its_streak_mask(site, sdb, tmp_path):
    """Chip 1 was destreaked (magicked > 0): cleaning removes images and recovery copies and
    sets magicked -1; the update regenerates them from the raw image, applies the camera's
    streak mask again, restores magicked to the streak run's magic_id."""
    before_run = await sdb.fetch_one(run_query("chip"), id=1)
    assert before_run["magicked"] > 0
    before = await files(sdb, "chip", 1)
    rec = await recovery_keys(sdb, 1)
    rec_md5 = await md5s(sdb, rec)
    await clean(site, sdb, tmp_path, [("chip", 1)])
    assert (await sdb.fetch_one(run_query("chip"), id=1))["magicked"] == -1
    gone = [k for k, f in (await files(sdb, "chip", 1)).items() if not f.exists]
    assert any(k.endswith(".ch.fits") for k in gone)
    assert not any([await Storage(sdb).exists(k) for k in rec])

    await runs.request_update(sdb, "chip", 1)
    procs = await update_until_full(site, sdb, tmp_path, "chip", 1)
    assert await sdb.fetch_one(run_query("chip"), id=1) == {
        "state": "full",
        "magicked": before_run["magicked"],
        "note": None,
    }
    comps = await runs.components(sdb, "chip", 1)
    assert {(c.data_state, c.magicked) for c in comps} == {("full", before_run["magicked"])}
    assert assert_same_products(before, await files(sdb, "chip", 1), "chip") >= 8
    assert await md5s(sdb, rec) == rec_md5
    done = procs[-1].events("update_done")
    assert done and done[0]["stage"] == "chip" and done[0]["files"] > 0


@pytest.mark.parametrize(
    ("stage_name", "run_id"),
    [("chip", 2), ("camera", 1), ("warp", 1), ("warp", 2), ("stack", 1), ("diff", 1)],
)
async def test_cleaned_run_updates_back_to_identical_products(site, sdb, tmp_path, stage_name, run_id):
    """full -> goto_cleaned -> cleaned -> update -> full: the same md5 for every product."""
    before = await files(sdb, stage_name, run_id)
    before_run = await sdb.fetch_one(run_query(stage_name), id=run_id)
    await clean(site, sdb, tmp_path, [(stage_name, run_id)])
    missing = [
        k for k, f in (await files(sdb, stage_name, run_id)).items() if not f.exists and f.file_class != "log"
    ]  # logs are kept compressed
    # a camera clean deletes nothing (REFERENCE 2); every other stage loses files
    assert bool(missing) == (stage_name != "camera"), missing
    await runs.request_update(sdb, stage_name, run_id)
    await update_until_full(site, sdb, tmp_path, stage_name, run_id, passes=1)
    row = await sdb.fetch_one(run_query(stage_name), id=run_id)
    assert row["magicked"] == before_run["magicked"]
    assert assert_same_products(before, await files(sdb, stage_name, run_id), stage_name) > 0


async def test_diff_whose_whole_input_chain_was_cleaned_cascades_and_comes_back(site, sdb, tmp_path):
    """Updating a diff whose warps, stack, the stack's warps, their chips and cameras were all
    cleaned asks each input to update, waits without a claim, and ends byte-identical."""
    chain = await _diff_chain(sdb, 1)
    before = {(s, i): await files(sdb, s, i) for s, i in chain}
    await clean(site, sdb, tmp_path, chain)
    await runs.request_update(sdb, "diff", 1)
    procs = await update_until_full(site, sdb, tmp_path, "diff", 1, passes=8)
    waited = [e for p in procs for e in p.events("update_waiting")]
    assert any(e["stage"] == "diff" and "update requested" in e["reason"] for e in waited)
    requested = {(e["input_stage"], e["input_id"]) for p in procs for e in p.events("update_input_requested")}
    assert ("chip", 1) in requested and ("stack", 1) in requested
    for (stage_name, run_id), old in before.items():
        row = await sdb.fetch_one(run_query(stage_name), id=run_id)
        if stage_name == "diff" or (stage_name, run_id) in requested:
            assert row["state"] == "full", (stage_name, run_id, row)
            assert_same_products(old, await files(sdb, stage_name, run_id), stage_name)
    owners = Query("t_own", "SELECT COUNT(*) FROM chipRun WHERE owner IS NOT NULL", "test")
    assert await sdb.fetch_val(owners) == 0


async def _diff_chain(sdb: Database, diff_id: int) -> list[tuple[str, int]]:
    q = Query(
        "t_chain",
        "SELECT i.warp1 AS warp_id, i.stack2 AS stack_id FROM diffInputSkyfile i WHERE i.diff_id = %(id)s",
        "test",
    )
    warps, stacks = set(), set()
    for r in await sdb.fetch_all(q, id=diff_id):
        warps.add(r["warp_id"])
        stacks.add(r["stack_id"])
    sw = Query("t_sw", "SELECT warp_id FROM stackInputSkyfile WHERE stack_id = %(id)s", "test")
    for s in stacks:
        warps |= {r["warp_id"] for r in await sdb.fetch_all(sw, id=s)}
    wc = Query(
        "t_wc",
        "SELECT c.cam_id, c.chip_id FROM warpRun w JOIN fakeRun f USING (fake_id) "
        "JOIN camRun c USING (cam_id) WHERE w.warp_id = %(id)s",
        "test",
    )
    chain: list[tuple[str, int]] = [("diff", diff_id)]
    chain += [("stack", s) for s in sorted(stacks)] + [("warp", w) for w in sorted(warps)]
    for w in sorted(warps):
        row = await sdb.fetch_one(wc, id=w)
        assert row is not None
        chain += [("camera", row["cam_id"]), ("chip", row["chip_id"])]
    return chain


async def test_request_update_wait_reports_when_the_pixels_are_back(site, sdb, tmp_path):
    """`ippctl runs request-update --wait` queues the update and exits 0 once it is full."""
    await clean(site, sdb, tmp_path, [("warp", 1)])
    env = {**agent_env(site.dsn), "IPP_VAR_DIR": str(site.var_dir)}
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.ctl.main",
            "runs",
            "request-update",
            "--stage",
            "warp",
            "--id",
            "1",
            "--wait",
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    updater = AgentProcess(
        "update", site.dsn, tmp_path, update_scratch_dir=str(tmp_path / "scratch"), update_wait_s=0
    )
    try:
        out, err = waiter.communicate(timeout=180)
    finally:
        updater.kill()
    assert waiter.returncode == 0, err
    assert "update requested" in out and "full: the pixels are back" in out


# -- rules ---------------------------------------------------------------------------------


async def test_fault_26_component_is_never_updated(site, sdb, tmp_path):
    await clean(site, sdb, tmp_path, [("chip", 2)])
    comps = await runs.components(sdb, "chip", 2)
    gone_one = comps[0].component
    await sdb.execute(
        Query(
            "t_f", "UPDATE chipProcessedImfile SET fault = 26 WHERE chip_id = 2 AND class_id = %(c)s", "test"
        ),
        c=gone_one,
    )
    await runs.request_update(sdb, "chip", 2)
    await update_until_full(site, sdb, tmp_path, "chip", 2, passes=1)
    after = {c.component: c.data_state for c in await runs.components(sdb, "chip", 2)}
    assert after[gone_one] != "full"
    assert all(s == "full" for c, s in after.items() if c != gone_one)
    image = rule("chip", "PPIMAGE.CHIP").filename(comps[0].path_base, gone_one)
    assert not await Storage(sdb).exists(image)
    note = (await sdb.fetch_one(run_query("chip"), id=2))["note"]
    assert "fault 26" in note


async def test_warp_update_always_remakes_sources_template_and_psf(site, sdb, tmp_path):
    """A warp in update with every file present still gets its sources, skycell template and
    psf made again (same bytes), the rest untouched."""
    before = await files(sdb, "warp", 1)
    await sdb.execute(Query("t_u", "UPDATE warpRun SET state = 'update' WHERE warp_id = 1", "test"))
    proc = (await update_until_full(site, sdb, tmp_path, "warp", 1, passes=1))[-1]
    done = proc.events("update_done")
    comps = len(await runs.components(sdb, "warp", 1))
    assert done[0]["files"] == 3 * comps
    assert assert_same_products(before, await files(sdb, "warp", 1), "warp") > 0


async def test_missing_config_dump_uses_current_recipes_and_saves_a_new_one(site, sdb, tmp_path):
    """The dump really gone (deleted): regenerate with the current recipes and save a new
    dump; with unchanged recipes everything, the dump included, comes back identical."""
    before = await files(sdb, "warp", 2)
    await clean(site, sdb, tmp_path, [("warp", 2)])
    comp = (await runs.components(sdb, "warp", 2))[0]
    dump = config_rule("warp").filename(comp.path_base)
    await Storage(sdb).delete(dump)
    await runs.request_update(sdb, "warp", 2)
    await update_until_full(site, sdb, tmp_path, "warp", 2, passes=1)
    after = await files(sdb, "warp", 2)
    assert after[dump].exists and after[dump].md5sum == before[dump].md5sum
    assert "new dump saved" in (await sdb.fetch_one(run_query("warp"), id=2))["note"]


async def test_config_dump_on_a_down_volume_regenerates_without_saving_one(site, sdb, tmp_path):
    await clean(site, sdb, tmp_path, [("stack", 1)])
    storage = Storage(sdb)
    comp = (await runs.components(sdb, "stack", 1))[0]
    dump = config_rule("stack").filename(comp.path_base, comp.component)
    info = await storage.stat(dump)
    # move the dump alone onto a volume we then take down
    await storage.add_volume("dumps", site.var_dir / "storage" / "dumps")
    await storage.replicate(dump, "dumps")
    await storage.cull(dump, info.instances[0].volume)
    await storage.set_volume_state("dumps", "down")
    await runs.request_update(sdb, "stack", 1)
    await update_until_full(site, sdb, tmp_path, "stack", 1, passes=1)
    note = (await sdb.fetch_one(run_query("stack"), id=1))["note"]
    assert "down: current recipes, no dump saved" in note
    assert [i.volume for i in (await storage.stat(dump)).instances] == ["dumps"]


# -- faults --------------------------------------------------------------------------------


async def test_corrupt_config_dump_fails_the_update_naming_it(site, sdb, tmp_path):
    await clean(site, sdb, tmp_path, [("diff", 1)])
    comp = (await runs.components(sdb, "diff", 1))[0]
    dump = config_rule("diff").filename(comp.path_base)
    (await Storage(sdb).locate(dump)).write_bytes(b"RECIPE METADATA\n  BROKEN\n")
    await runs.request_update(sdb, "diff", 1)
    await agent(site, tmp_path, "update")
    row = await sdb.fetch_one(run_query("diff"), id=1)
    assert row["state"] == "update" and row["note"].startswith("update failed: processor:")
    assert "MdcError" in row["note"]


async def test_processor_failure_marks_the_update_failed_with_the_reason(site, sdb, tmp_path):
    await clean(site, sdb, tmp_path, [("warp", 1)])
    missing = {k for k, f in (await files(sdb, "warp", 1)).items() if not f.exists}
    await runs.request_update(sdb, "warp", 1)
    failing = f"{sys.executable} -c \"import sys; sys.exit('bad recipe: APERTURE')\""
    proc = await agent(site, tmp_path, "update", update_command_warp=failing)
    row = await sdb.fetch_one(run_query("warp"), id=1)
    assert row["state"] == "update"
    assert row["note"].startswith("update failed: processor:") and "bad recipe" in row["note"]
    assert proc.events("update_failed")
    after = {k for k, f in (await files(sdb, "warp", 1)).items() if not f.exists}
    assert after == missing  # nothing half-stored
    # a failed update is not retried on its own...
    await agent(site, tmp_path, "update")
    assert (await sdb.fetch_one(run_query("warp"), id=1))["state"] == "update"
    # ...until someone asks again
    await runs.request_update(sdb, "warp", 1)
    await update_until_full(site, sdb, tmp_path, "warp", 1, passes=1)


async def test_processor_that_hangs_is_killed_at_the_timeout(site, sdb, tmp_path):
    await clean(site, sdb, tmp_path, [("diff", 1)])
    await runs.request_update(sdb, "diff", 1)
    marker = tmp_path / "hung.pid"
    hanging = (
        f'{sys.executable} -c "import os,time; '
        f"open('{marker}','w').write(str(os.getpid())); time.sleep(600)\""
    )
    await agent(site, tmp_path, "update", update_command_diff=hanging, update_timeout_s=2)
    row = await sdb.fetch_one(run_query("diff"), id=1)
    assert row["state"] == "update" and "timeout" in row["note"]
    pid = int(marker.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


async def test_missing_input_file_fails_with_its_name(site, sdb, tmp_path):
    """A warp's input chip image deleted by hand while the chip run says full: the update
    fails naming the file, and the warp keeps what it had."""
    await clean(site, sdb, tmp_path, [("warp", 1)])
    chip = (await runs.components(sdb, "chip", 1))[0]
    image = rule("chip", "PPIMAGE.CHIP").filename(chip.path_base, chip.component)
    await Storage(sdb).delete(image)
    await runs.request_update(sdb, "warp", 1)
    await agent(site, tmp_path, "update")
    row = await sdb.fetch_one(run_query("warp"), id=1)
    assert row["state"] == "update" and image in row["note"] and "missing" in row["note"]


async def test_input_volume_down_waits_and_retries(site, sdb, tmp_path):
    """The raw images on a volume that is down: the chip update waits (no failure) and goes
    through once the volume is back."""
    await clean(site, sdb, tmp_path, [("chip", 2)])
    await runs.request_update(sdb, "chip", 2)
    storage = Storage(sdb)
    raw_uri = await sdb.fetch_val(
        Query(
            "t_raw",
            "SELECT r.uri FROM rawImfile r JOIN chipRun c USING (exp_id) WHERE c.chip_id = 2 LIMIT 1",
            "test",
        )
    )
    volume = (await storage.stat(raw_uri)).instances[0].volume
    await storage.set_volume_state(volume, "down")
    proc = await agent(site, tmp_path, "update")
    row = await sdb.fetch_one(run_query("chip"), id=2)
    assert row["state"] == "update" and row["note"].startswith("update waiting:")
    assert proc.events("update_waiting")
    await storage.set_volume_state(volume, "up")
    await update_until_full(site, sdb, tmp_path, "chip", 2, passes=1)


async def test_sigkill_mid_update_is_redone_by_the_next_agent(site, sdb, tmp_path):
    """An update agent killed while its processor runs: the sweeper hands the run back, the
    next agent regenerates it, the products are identical, and the victim's scratch
    directory is removed by the next agent (its lock died with the victim)."""
    before = await files(sdb, "stack", 1)
    await clean(site, sdb, tmp_path, [("stack", 1)])
    await runs.request_update(sdb, "stack", 1)
    marker = tmp_path / "started"
    slow = f"sh -c 'touch {marker}; sleep 30; exec {sys.executable} -m sim.regen \"$0\"'"
    victim = AgentProcess(
        "update", site.dsn, tmp_path, update_command_stack=slow, update_scratch_dir=str(tmp_path / "scratch")
    )
    try:
        await eventually(marker.exists, timeout_s=60, what="the processor to start")
    finally:
        victim.kill()
    owner = Query(
        "t_owner",
        "SELECT r.owner, c.status, c.heartbeat_at < NOW(6) - INTERVAL "
        "2500000 MICROSECOND AS stale FROM stackRun r LEFT JOIN clients c ON "
        "c.client_id = r.owner WHERE r.stack_id = 1",
        "test",
    )
    held = await sdb.fetch_one(owner)
    assert held["owner"] == victim.client_id(), (held, victim.output()[-2000:])
    left = list((tmp_path / "scratch").iterdir())
    assert len(left) == 1 and left[0].name.startswith("stack.1.")
    # once the victim's heartbeat is stale, the next agent's start-up sweep releases its claim
    await eventually(lambda: _stale(sdb, owner), timeout_s=30, what="the victim stale")
    passes = await update_until_full(site, sdb, tmp_path, "stack", 1, passes=3)
    assert assert_same_products(before, await files(sdb, "stack", 1), "stack") > 0
    assert list((tmp_path / "scratch").iterdir()) == []
    removed = passes[0].events("update_scratch_removed")
    assert [Path(d).name for d in removed[0]["directories"]] == [left[0].name]


async def _stale(sdb: Database, owner: Query) -> bool:
    row = await sdb.fetch_one(owner)
    return row is not None and bool(row["stale"])


def test_regen_rejects_a_bad_job_file(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"stage": "camera", "tasks": []}))
    result = subprocess.run(
        [sys.executable, "-m", "sim.regen", str(job)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "'stage' must be one of" in result.stderr
    job.write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "sim.regen", str(job)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "not a readable job file" in result.stderr
