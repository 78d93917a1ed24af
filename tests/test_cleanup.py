"""The cleanup agent on a generated survey: what it deletes, what it keeps, and its guards."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from shared.processing import runs
from shared.processing.filerules import deleted_by, rule
from shared.storage.store import Storage
from tests.helpers import AgentProcess
from tests.survey_fixture import SurveySite, ippctl, survey_site

_numbers = itertools.count()
RUN = Query("t_run", "SELECT state, magicked, note FROM chipRun WHERE chip_id = %(id)s", "test")
LABELS = Query("t_labels", "SELECT state, label FROM chipRun WHERE chip_id = %(id)s", "test")
COMPS = Query(
    "t_comps",
    "SELECT class_id, data_state, magicked FROM chipProcessedImfile WHERE chip_id = %(id)s ORDER BY class_id",
    "test",
)


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for survey in survey_site(test_dsn, f"cl{next(_numbers)}", tmp_path, exposures=3, chips=2, seed=5):
        yield survey


async def clean(site: SurveySite, tmp_path: Path, *args: str) -> AgentProcess:
    agent = AgentProcess("cleanup", site.dsn, tmp_path, "--once", *args)
    code = await agent.wait(timeout_s=120)
    assert code == 0, agent.output()
    return agent


async def exists(sdb: Database, key: str) -> bool:
    return await Storage(sdb).exists(key)


async def test_goto_cleaned_deletes_what_the_rules_say_and_keeps_the_rest(site, sdb, tmp_path):
    storage = Storage(sdb)
    before = {(f.component, f.key): f for f in await runs.run_files(sdb, "chip", 1)}
    logs = {
        f.key: await storage.read_bytes(f.key) for f in before.values() if f.file_class == "log" and f.exists
    }
    assert logs
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    agent = await clean(site, tmp_path)
    assert await sdb.fetch_one(RUN, id=1) == {"state": "cleaned", "magicked": -1, "note": None}
    assert [(c["data_state"], c["magicked"]) for c in await sdb.fetch_all(COMPS, id=1)] == [
        ("cleaned", -1),
        ("cleaned", -1),
    ]
    doomed = {r.name for r in deleted_by("chip", "cleaned")}
    after = {f.key: f for f in await runs.run_files(sdb, "chip", 1)}
    for (_, key), f in before.items():
        if f.rule in doomed:
            assert not after[key].exists, key
        elif key in logs:
            # gzipped in place of the log (zcat reads it back), listed under its new name
            assert not await exists(sdb, key), key
            assert after[key + ".gz"].compressed and after[key + ".gz"].rule == f.rule
            assert gzip.decompress(await storage.read_bytes(key + ".gz")) == logs[key]
        elif f.exists:
            assert after[key].exists, key
    # destreak recovery copies went with their images
    recovery = Query(
        "t_rec",
        "SELECT recovery_path_base AS base, component FROM magicDSFile f "
        "JOIN magicDSRun r USING (magic_ds_id) WHERE r.stage = 'chip' "
        "AND r.stage_id = 1",
        "test",
    )
    for row in await sdb.fetch_all(recovery):
        assert not await exists(sdb, rule("chip", "PPIMAGE.CHIP").filename(row["base"], row["component"]))
    path_base = next(iter(before.values())).key.rsplit(".XY", 1)[0]
    log_key = f"{path_base}.cleanup.log.gz"
    text = gzip.decompress(await Storage(sdb).read_bytes(log_key)).decode()
    assert "result: cleaned" in text and "deleted" in text
    assert agent.events("cleanup_done")
    assert (await sdb.fetch_one(Query("t_other", "SELECT state FROM chipRun WHERE chip_id = 2", "test")))[
        "state"
    ] == "full"


async def test_a_corrupt_smf_keeps_the_chip_cmf_and_b1(site, sdb, tmp_path):
    cam = await runs.run_files(sdb, "camera", 1)
    smf = next(f for f in cam if f.rule == "PSASTRO.OUTPUT")
    path = await Storage(sdb).locate(smf.key)
    path.write_bytes(path.read_bytes()[:3000])  # truncated on disk
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    await clean(site, tmp_path)
    files = await runs.run_files(sdb, "chip", 1)
    assert all(f.exists for f in files if f.rule in ("PSPHOT.OUTPUT", "PPIMAGE.BIN1"))
    assert not any(f.exists for f in files if f.rule == "PPIMAGE.CHIP")
    assert (await sdb.fetch_one(RUN, id=1))["state"] == "cleaned"


async def test_a_missing_config_dump_refuses_that_component_and_marks_the_run(site, sdb, tmp_path):
    files = await runs.run_files(sdb, "chip", 2)
    victim = next(f for f in files if f.rule == "PPIMAGE.CONFIG")
    await Storage(sdb).delete(victim.key)
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=2)
    await clean(site, tmp_path)
    run = await sdb.fetch_one(RUN, id=2)
    assert run["state"] == "error_cleaned" and "config dump missing" in run["note"]
    states = {c["class_id"]: c["data_state"] for c in await sdb.fetch_all(COMPS, id=2)}
    assert states[victim.component] == "full"
    assert sorted(states.values()) == ["cleaned", "full"]
    kept = [
        f
        for f in await runs.run_files(sdb, "chip", 2)
        if f.component == victim.component and f.rule == "PPIMAGE.CHIP"
    ]
    assert kept[0].exists


async def test_goto_scrubbed_refuses_components_that_still_have_their_config(site, sdb, tmp_path):
    await runs.set_state(sdb, "warp", "goto_scrubbed", run_id=2)
    await clean(site, tmp_path)
    state = await sdb.fetch_val(Query("t_w", "SELECT state FROM warpRun WHERE warp_id = 2", "test"))
    assert state == "error_scrubbed"


async def test_goto_purged_also_removes_the_config_dump_but_keeps_the_background(site, sdb, tmp_path):
    await runs.set_state(sdb, "chip", "goto_purged", run_id=3)
    await clean(site, tmp_path)
    files = {f.rule: f for f in await runs.run_files(sdb, "chip", 3)}
    assert not files["PPIMAGE.CONFIG"].exists and not files["PSPHOT.OUTPUT"].exists
    assert files["PSPHOT.BACKMDL"].exists
    assert (await sdb.fetch_one(RUN, id=3))["state"] == "purged"


async def test_every_stage_can_be_cleaned(site, sdb, tmp_path):
    for stage_name in ("camera", "warp", "diff", "stack"):
        run_id = (await runs.list_runs(sdb, stage_name, limit=1))[0]["id"]
        await runs.set_state(sdb, stage_name, "goto_cleaned", run_id=run_id)
    await clean(site, tmp_path)
    for stage_name in ("camera", "warp", "diff", "stack"):
        run = (await runs.list_runs(sdb, stage_name, limit=1))[0]
        assert run["state"] == "cleaned", stage_name
        doomed = {r.name for r in deleted_by(stage_name, "cleaned")}
        left = [
            f.key for f in await runs.run_files(sdb, stage_name, run["id"]) if f.rule in doomed and f.exists
        ]
        assert left == [], stage_name


async def test_cleaning_a_censored_camera_run_removes_the_two_extra_copies_of_its_smf(site, sdb, tmp_path):
    """Seed 000: "We found about 15000 censored camera runs that were not restored ... This will
    remove 2 copies of the smf for each run." Camera run 1 (exposure 0, destreaked) has its
    censored smf and the two copies the destreak left (backup and recovery); cleaning it
    removes both copies and keeps the smf. Camera run 2 (exposure 1, never destreaked) has
    none to remove and keeps its smf too."""
    copies = Query(
        "t_copies",
        "SELECT f.backup_path_base, f.recovery_path_base FROM magicDSRun r "
        "JOIN magicDSFile f ON f.magic_ds_id = r.magic_ds_id "
        "WHERE r.stage = 'camera' AND r.stage_id = %(id)s",
        "test",
    )
    smf_rule = rule("camera", "PSASTRO.OUTPUT")
    (row,) = await sdb.fetch_all(copies, id=1)
    extra = [smf_rule.filename(row["backup_path_base"]), smf_rule.filename(row["recovery_path_base"])]
    assert all([await exists(sdb, k) for k in extra])
    assert await sdb.fetch_all(copies, id=2) == []
    for cam_id in (1, 2):
        await runs.set_state(sdb, "camera", "goto_cleaned", run_id=cam_id)
    await clean(site, tmp_path)
    assert not any([await exists(sdb, k) for k in extra])
    for cam_id in (1, 2):
        assert (await runs.get_run(sdb, "camera", cam_id))["state"] == "cleaned"
        smf = [f for f in await runs.run_files(sdb, "camera", cam_id) if f.rule == "PSASTRO.OUTPUT"]
        assert smf and all(f.exists for f in smf), cam_id


async def test_a_volume_down_marks_the_run_in_error_and_deletes_nothing_there(site, sdb, tmp_path):
    storage = Storage(sdb)
    for v in await storage.volumes():
        await storage.set_volume_state(v.name, "down")
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    await clean(site, tmp_path)
    run = await sdb.fetch_one(RUN, id=1)
    assert run["state"] == "error_cleaned" and "volume that is down" in run["note"]
    for v in await storage.volumes():
        await storage.set_volume_state(v.name, "up")
    assert all(f.exists for f in await runs.run_files(sdb, "chip", 1) if f.file_class != "log")


async def test_dry_run_lists_deletions_and_changes_nothing(site, sdb, tmp_path):
    before = len(await Storage(sdb).list("", limit=100000))
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    agent = await clean(site, tmp_path, "--dry-run")
    assert "would delete" in agent.output() and ".ch.fits" in agent.output()
    assert len(await Storage(sdb).list("", limit=100000)) == before
    assert (await sdb.fetch_one(RUN, id=1))["state"] == "goto_cleaned"


async def test_a_second_pass_removes_what_the_first_kept(site, sdb, tmp_path):
    """Seed 000's second pass, as an operator runs it: the first pass (corrupt smf) keeps the
    cmf; once the smf is repaired, `ippctl runs set-state --label second_pass --from-label L
    --only-state cleaned` relabels and queues only the cleaned runs in one go (--dry-run
    first changes nothing), and the agent takes every component of a second_pass run, so the
    cmf goes."""
    cam = await runs.run_files(sdb, "camera", 1)
    smf_path = await Storage(sdb).locate(next(f for f in cam if f.rule == "PSASTRO.OUTPUT").key)
    good = smf_path.read_bytes()
    smf_path.write_bytes(good[:3000])
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    await clean(site, tmp_path)
    assert any(f.exists for f in await runs.run_files(sdb, "chip", 1) if f.rule == "PSPHOT.OUTPUT")
    smf_path.write_bytes(good)
    second = (
        "runs",
        "set-state",
        "--stage",
        "chip",
        "--state",
        "goto_cleaned",
        "--label",
        "second_pass",
        "--from-label",
        "survey.nightly",
        "--only-state",
        "cleaned",
    )
    dry = ippctl(site, *second, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "would set chip 1: cleaned -> goto_cleaned (label survey.nightly -> second_pass)" in dry.stdout
        and "nothing was changed" in dry.stdout
    )
    assert await sdb.fetch_one(LABELS, id=1) == {"state": "cleaned", "label": "survey.nightly"}
    done = ippctl(site, *second)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "chip 1: cleaned -> goto_cleaned (label survey.nightly -> second_pass)"
    ]
    assert await sdb.fetch_one(LABELS, id=1) == {"state": "goto_cleaned", "label": "second_pass"}
    for other in (2, 3):  # full runs of the same label are left alone
        assert await sdb.fetch_one(LABELS, id=other) == {"state": "full", "label": "survey.nightly"}
    agent = await clean(site, tmp_path)
    assert not any(f.exists for f in await runs.run_files(sdb, "chip", 1) if f.rule == "PSPHOT.OUTPUT")
    assert (await sdb.fetch_one(RUN, id=1))["state"] == "cleaned"
    assert [e["run_id"] for e in agent.events("cleanup_done")] == [1]


async def test_a_second_pass_names_what_it_cannot_do(site, sdb, tmp_path):
    no_runs = ippctl(
        site,
        "runs",
        "set-state",
        "--stage",
        "chip",
        "--state",
        "goto_cleaned",
        "--label",
        "second_pass",
        "--from-label",
        "survey.nightly",
        "--only-state",
        "cleaned",
    )
    assert no_runs.returncode != 0
    assert "no chipRun with label 'survey.nightly' is in state cleaned" in no_runs.stderr
    purged = ippctl(site, "runs", "set-state", "--stage", "chip", "--state", "goto_purged", "--id", "2")
    assert purged.returncode == 0, purged.stderr
    await clean(site, tmp_path)
    refused = ippctl(
        site,
        "runs",
        "set-state",
        "--stage",
        "chip",
        "--state",
        "goto_cleaned",
        "--label",
        "second_pass",
        "--from-label",
        "survey.nightly",
    )
    assert refused.returncode != 0
    assert "chipRun 2 is purged: cannot set goto_cleaned" in refused.stderr
    assert "nothing was changed" in refused.stderr
    labels = [await sdb.fetch_one(LABELS, id=i) for i in (1, 2, 3)]
    assert [r["label"] for r in labels] == ["survey.nightly"] * 3


async def test_higher_label_priority_is_cleaned_first(site, sdb, tmp_path):
    """Highest Label.priority first; a label without a Label row counts 10000, as in the
    IPP's queries (IFNULL(Label.priority, 10000)), so it goes before 'urgent' (100)."""
    await sdb.execute(Query("t_prio", "INSERT INTO Label (label, priority) VALUES ('urgent', 100)", "test"))
    await sdb.execute(Query("t_lab", "UPDATE chipRun SET label = 'urgent' WHERE chip_id = 3", "test"))
    await sdb.execute(Query("t_lab2", "UPDATE chipRun SET label = 'no.label.row' WHERE chip_id = 2", "test"))
    for chip_id in (1, 2, 3):
        await runs.set_state(sdb, "chip", "goto_cleaned", run_id=chip_id)
    agent = await clean(site, tmp_path)
    order = [e["run_id"] for e in agent.events("cleanup_done")]
    assert order == [2, 3, 1]


async def test_a_volume_down_under_a_deletable_file_fails_only_that_component(site, sdb, tmp_path):
    storage = Storage(sdb)
    files = await runs.run_files(sdb, "chip", 1)
    doomed = {r.name for r in deleted_by("chip", "cleaned")}
    image = other_volume = None
    for config in (f for f in files if f.rule == "PPIMAGE.CONFIG"):
        config_volume = (await storage.stat(config.key)).instances[0].volume
        for f in files:
            if f.component == config.component and f.rule in doomed:
                volume = (await storage.stat(f.key)).instances[0].volume
                if volume != config_volume:
                    image, other_volume = f, volume
    assert image is not None and other_volume is not None
    await storage.set_volume_state(other_volume, "down")
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    await clean(site, tmp_path)
    await storage.set_volume_state(other_volume, "up")
    run = await sdb.fetch_one(RUN, id=1)
    assert run["state"] == "error_cleaned" and "volume is down" in run["note"]
    assert await exists(sdb, image.key)


async def test_a_run_left_half_done_by_a_dead_client_is_redone_exactly(site, sdb, tmp_path):
    """As after a SIGKILL mid-run: one component already cleaned and some of the other's
    files deleted, the run still goto_cleaned and owned by a client that is gone. The sweeper
    releases it, the agent redoes it, and nothing outside the rules is deleted."""
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    files = await runs.run_files(sdb, "chip", 1)
    first = files[0].component
    doomed = {r.name for r in deleted_by("chip", "cleaned")}
    storage = Storage(sdb)
    for f in files:
        if f.rule in doomed and (f.component == first or f.rule == "PPIMAGE.CHIP"):
            await storage.delete(f.key, missing_ok=True)
    await sdb.execute(
        Query(
            "t_half",
            "UPDATE chipProcessedImfile SET data_state = 'cleaned' WHERE chip_id = 1 AND class_id = %(c)s",
            "test",
        ),
        c=first,
    )
    await sdb.execute(
        Query(
            "t_owned",
            "UPDATE chipRun SET owner = 'dead-client-0000-0000-"
            "000000000000', claimed_at = NOW(6) WHERE chip_id = 1",
            "test",
        )
    )
    await clean(site, tmp_path)
    assert (await sdb.fetch_one(RUN, id=1))["state"] == "cleaned"
    after = await runs.run_files(sdb, "chip", 1)
    assert not [f.key for f in after if f.rule in doomed and f.exists]
    kept = [f for f in after if f.rule not in doomed and f.file_class != "log"]
    assert kept and all(f.exists for f in kept)


async def test_a_run_whose_directory_escapes_its_volume_fails_alone_in_its_batch(site, sdb, tmp_path):
    """Runs claimed together are deleted in one storage call; when that call refuses one
    run (its directory was swapped for a link leading out of the volume), the batch is
    done again run by run: that run ends error_cleaned naming the problem, nothing behind
    the link is touched, and the other runs are cleaned."""
    storage = Storage(sdb)
    doomed = {r.name for r in deleted_by("chip", "cleaned")}
    image = next(f for f in await runs.run_files(sdb, "chip", 2) if f.rule in doomed)
    directory = (await storage.locate(image.key)).parent
    outside = tmp_path / "outside"
    directory.rename(outside)
    directory.symlink_to(outside, target_is_directory=True)
    kept = sorted(p.name for p in outside.iterdir())
    for chip_id in (1, 2, 3):
        await runs.set_state(sdb, "chip", "goto_cleaned", run_id=chip_id)
    agent = await clean(site, tmp_path)
    failed = await sdb.fetch_one(RUN, id=2)
    assert failed["state"] == "error_cleaned" and "outside the root" in failed["note"]
    assert sorted(p.name for p in outside.iterdir()) == kept
    for chip_id in (1, 3):
        assert (await sdb.fetch_one(RUN, id=chip_id))["state"] == "cleaned"
        left = [f.key for f in await runs.run_files(sdb, "chip", chip_id) if f.rule in doomed and f.exists]
        assert not left
    assert sorted(e["run_id"] for e in agent.events("cleanup_done")) == [1, 3]
    assert [e["run_id"] for e in agent.events("cleanup_failed")] == [2]
