"""Batches through PSPS: the stand-in loads and merges what the loader published, the ODM
poller records each stage, the batch cleaner deletes the copies the policy names, and every
fault (ODM down, slow, failing, nonsense; copies already gone) is retried, never recorded as
done when it was not."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.db.database import Database
from shared.db.queries import Query
from sim.psps.dxlayer import knob_fails
from tests.helpers import eventually
from tests.psps_fixture import PspsSide, psps_side
from tests.survey_fixture import SurveySite, configure_loading, ippctl, survey_site

_numbers = itertools.count()
BATCHES = Query(
    "t_pb",
    "SELECT batch_id, name, type, item_id, detections, fits_path, fileset, "
    "processed, loaded_to_datastore, loaded_to_odm, merge_worthy, merged, "
    "deleted_datastore, deleted_dxlayer, deleted_local, note, purged "
    "FROM psps_batch ORDER BY batch_id",
    "test",
)
ITEMS = Query(
    "t_pi", "SELECT type, item_id, state, attempts, batch_id, note FROM psps_item ORDER BY item_key", "test"
)
DX = Query(
    "t_dx", "SELECT name, status, failed_stage, reason, copy_deleted FROM dx_batch ORDER BY name", "test"
)


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    """A fresh site per test: the stand-in loads every psps product it sees."""
    async for s in survey_site(
        test_dsn, f"pf{next(_numbers)}", tmp_path / "site", exposures=3, chips=2, seed=31
    ):
        yield s


async def loaded_config(site: SurveySite, side: PspsSide, name: str, *extra: str) -> None:
    """A config whose IN batch and P2/ST/OB batches are built and published."""
    configure_loading(site, name, "batch_types=P2,ST,OB", *extra)
    assert ippctl(site, "psps", "init", name).returncode == 0
    assert ippctl(site, "psps", "queue", name).returncode == 0
    await side.run_once("loader", "--config", name)


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def rows(sdb: Database, q: Query) -> list[dict[str, Any]]:
    return await sdb.fetch_all(q)


async def test_published_batches_are_merged_tracked_and_their_copies_deleted(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await loaded_config(site, side, "flow")
        published = [b for b in await rows(sdb, BATCHES) if b["loaded_to_datastore"] == "succeeded"]
        assert {b["type"] for b in published} == {"IN", "P2", "ST", "OB"}
        pdb = await side.psps_db()
        try:

            async def all_merged() -> bool:
                dx = await pdb.fetch_all(DX)
                assert not [d for d in dx if d["status"] == "failed"], dx
                return len(dx) == len(published) and all(d["status"] == "merged" for d in dx)

            await eventually(all_merged, timeout_s=90, what="the DXLayer to merge every batch")
            # PSPS holds every detection of the P2 batches exactly once, under its keys
            n = await pdb.fetch_val(Query("t_n", "SELECT COUNT(*) FROM Detection", "test"))
            assert n == sum(b["detections"] for b in published if b["type"] == "P2") > 0
            frames = await pdb.fetch_val(Query("t_f", "SELECT COUNT(*) FROM FrameMeta", "test"))
            assert frames == 3
        finally:
            await pdb.close()
        code, body = get(f"{side.odm}/odm/batch/{published[1]['name']}")
        assert code == 200 and body["status"] == "merged" and body["batch"] == published[1]["name"]
        assert get(f"{side.odm}/odm/batch/B99999999")[0] == 404

        # --stage and --type narrow what is polled
        unmerged = await side.run_once("odm_poller", "--config", "flow", "--stage", "unmerged")
        assert unmerged.events("batch_status") == []  # nothing is merge_worthy yet here
        st = await side.run_once("odm_poller", "--config", "flow", "--type", "ST")
        assert {e["type"] for e in st.events("batch_status")} == {"ST"}
        poller = await side.run_once("odm_poller", "--config", "flow")
        after = await rows(sdb, BATCHES)
        assert all(
            (b["loaded_to_odm"], b["merge_worthy"], b["merged"]) == ("succeeded", "succeeded", "succeeded")
            for b in after
        )
        assert len(poller.events("batch_status")) + len(st.events("batch_status")) == len(published)
        passes = poller.events("odm_pass")  # one summary per pass of the config
        assert passes and {(p["config"], p["errors"]) for p in passes} == {("flow", 0)}
        assert sum(p["moved"] for p in passes) == len(poller.events("batch_status"))

        cleaner = await side.run_once("batch_cleaner", "--config", "flow")
        after = await rows(sdb, BATCHES)
        assert all(
            (b["deleted_datastore"], b["deleted_dxlayer"], b["deleted_local"]) == ("succeeded",) * 3
            for b in after
        ), after
        assert len(cleaner.events("batch_copy_deleted")) == 3 * len(published)
        for b in after:  # every copy is gone: local files, DataStore fileset, DXLayer copy
            assert not Path(b["fits_path"]).exists()
            assert not Path(b["fits_path"]).with_name(f"{b['name']}.manifest.json").exists()
        listing = ippctl(site, "ds", "ls", "PSPS_flow")
        assert not any(b["name"] in listing.stdout for b in after), listing.stdout
        assert not any((side.site.var_dir / "dxlayer").glob("*/B*/*.fits"))
        shown = ippctl(site, "psps", "batches", "flow")
        assert shown.stdout.count("ds,dx,local") == len(after)
        # nothing is left to do: a second pass deletes nothing
        again = await side.run_once("batch_cleaner", "--config", "flow")
        assert again.events("batch_copy_deleted") == []


async def test_failed_batches_are_requeued_and_reloaded_until_merged_or_out_of_attempts(site, sdb, tmp_path):
    """With the ODM failing a share of batches, every item ends merged, or failed after its
    attempts with PSPS's reason; PSPS holds each merged detection exactly once."""
    async with psps_side(site, tmp_path, odm_fail_share=0.5) as side:
        await loaded_config(site, side, "shaky", "batch_types=P2")
        pdb = await side.psps_db()
        try:
            for _ in range(4):  # poll, reload the requeued items, until nothing moves

                async def settled() -> bool:
                    dx = {d["name"]: d["status"] for d in await pdb.fetch_all(DX)}
                    published = [
                        b for b in await rows(sdb, BATCHES) if b["loaded_to_datastore"] == "succeeded"
                    ]
                    return all(dx.get(b["name"]) in ("merged", "failed") for b in published)

                await eventually(settled, timeout_s=60, what="the DXLayer to finish")
                await side.run_once("odm_poller", "--config", "shaky")
                if not [i for i in await rows(sdb, ITEMS) if i["state"] == "new"]:
                    break
                await side.run_once("loader", "--config", "shaky")
            batches = await rows(sdb, BATCHES)
            p2 = [b for b in batches if b["type"] == "P2"]
            assert any(knob_fails(b["name"], 0.5) for b in p2), "the knob failed nothing"
            for b in p2:  # each batch's fate is the knob's
                expected = "failed" if knob_fails(b["name"], 0.5) else "succeeded"
                assert b["loaded_to_odm"] == expected, b
                if expected == "failed":
                    assert "odm_fail_share" in b["note"]
            for item in await rows(sdb, ITEMS):
                mine = [b for b in p2 if b["item_id"] == item["item_id"]]
                if item["state"] == "done":
                    assert mine[-1]["merged"] == "succeeded"
                else:
                    assert item["state"] == "failed" and item["attempts"] == 3, item
                    assert "attempts used up" in item["note"] and "odm_fail_share" in item["note"]
            merged = sum(b["detections"] for b in p2 if b["merged"] == "succeeded")
            count = await pdb.fetch_val(Query("t_n", "SELECT COUNT(*) FROM Detection", "test"))
            assert count == merged
        finally:
            await pdb.close()


async def test_a_batch_loaded_twice_is_refused_by_psps_and_shows_up_failed(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await loaded_config(site, side, "twice", "batch_types=P2")
        pdb = await side.psps_db()
        try:

            async def merged(n: int) -> bool:
                merged_now = sum(d["status"] == "merged" for d in await pdb.fetch_all(DX))
                return bool(merged_now >= n)

            await eventually(lambda: merged(4), timeout_s=60, what="4 merged batches")
            item = (await rows(sdb, ITEMS))[0]
            await sdb.execute(
                Query(
                    "t_r", "UPDATE psps_item SET state = 'new' WHERE item_id = %(id)s AND type = 'P2'", "test"
                ),
                id=item["item_id"],
            )
            await side.run_once("loader", "--config", "twice")

            async def refused() -> list[dict[str, Any]]:
                return [d for d in await pdb.fetch_all(DX) if d["status"] == "failed"]

            failed = await eventually(refused, timeout_s=60, what="the second load to fail")
            assert failed[0]["failed_stage"] == "merge_worthy"
            assert "already merged" in failed[0]["reason"]
            await side.run_once("odm_poller", "--config", "twice")
            again = next(b for b in await rows(sdb, BATCHES) if b["name"] == failed[0]["name"])
            assert (again["loaded_to_odm"], again["merge_worthy"]) == ("succeeded", "failed")
            assert "already merged" in again["note"]
        finally:
            await pdb.close()


async def test_an_odm_that_is_down_changes_nothing_and_deletions_are_retried(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await loaded_config(site, side, "down", "batch_types=P2")
        pdb = await side.psps_db()
        try:
            await eventually(lambda: _all_status(pdb, "merged", 4), timeout_s=60, what="every batch merged")
        finally:
            await pdb.close()
        await side.stop_sim()
        poller = await side.run_once("odm_poller", "--config", "down")
        assert {b["loaded_to_odm"] for b in await rows(sdb, BATCHES)} == {"pending"}
        unusable = poller.events("odm_answer_unusable")
        assert {e["batch"] for e in unusable} == {b["name"] for b in await rows(sdb, BATCHES)}
        assert [(p["checked"], p["errors"], p["moved"]) for p in poller.events("odm_pass")] == [
            (len(unusable), len(unusable), 0)
        ]
        # a batch set merge_worthy by hand: its DXLayer copy cannot be deleted while the ODM is down
        await sdb.execute(
            Query("t_mw", "UPDATE psps_batch SET merge_worthy = 'succeeded' WHERE name = 'B00000002'", "test")
        )
        cleaner = await side.run_once("batch_cleaner", "--config", "down", batch_retry_s=0)
        b2 = next(b for b in await rows(sdb, BATCHES) if b["name"] == "B00000002")
        assert (b2["deleted_datastore"], b2["deleted_dxlayer"]) == ("succeeded", "failed")
        assert "dxlayer" in b2["note"] and "B00000002" in b2["note"]
        assert cleaner.events("batch_delete_failed")[0]["batch"] == "B00000002"
        side.start_sim()
        await side.odm_up()
        await side.run_once("batch_cleaner", "--config", "down", batch_retry_s=0)
        b2 = next(b for b in await rows(sdb, BATCHES) if b["name"] == "B00000002")
        assert b2["deleted_dxlayer"] == "succeeded"
        await side.run_once("odm_poller", "--config", "down")
        assert {b["merged"] for b in await rows(sdb, BATCHES)} == {"succeeded"}


async def _all_status(pdb: Database, status: str, n: int) -> bool:
    dx = await pdb.fetch_all(DX)
    return len(dx) >= n and all(d["status"] == status for d in dx)


async def test_an_odm_answering_500_changes_nothing(site, sdb, tmp_path):
    async with psps_side(site, tmp_path, odm_error_share=1.0) as side:
        await loaded_config(site, side, "err", "batch_types=P2")
        poller = await side.run_once("odm_poller", "--config", "err")
        assert {b["loaded_to_odm"] for b in await rows(sdb, BATCHES)} == {"pending"}
        errors = poller.events("odm_answer_unusable")
        assert len(errors) == 4 and all("HTTP 500" in e["error"] for e in errors)


async def test_a_slow_odm_times_out_and_nothing_is_recorded(site, sdb, tmp_path):
    async with psps_side(site, tmp_path, odm_slow_s=3) as side:
        await loaded_config(site, side, "slow", "batch_types=P2")
        poller = await side.run_once("odm_poller", "--config", "slow", odm_timeout_s=0.5)
        assert {b["loaded_to_odm"] for b in await rows(sdb, BATCHES)} == {"pending"}
        assert all("TimeoutError" in e["error"] for e in poller.events("odm_answer_unusable"))
        assert len(poller.events("odm_answer_unusable")) == 4


class FakeOdm:
    """An ODM on 127.0.0.1 that answers whatever the test says."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def __aenter__(self) -> FakeOdm:
        from aiohttp import web

        async def status(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            self.asked.append(name)
            code, body = self.answer(name)
            return web.Response(status=code, text=body, content_type="application/json")

        app = web.Application()
        app.router.add_get("/odm/batch/{name}", status)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


NONSENSE = {
    "not-json": (200, "<html>busy</html>"),
    "unknown-status": (200, '{"batch": "%s", "status": "exploded"}'),
    "other-batch": (200, '{"batch": "B12345678", "status": "merged"}'),
    "unknown-stage": (200, '{"batch": "%s", "status": "failed", "stage": "somewhere"}'),
    "not-an-object": (200, '["%s", "merged"]'),
    "http-500": (500, '{"error": "internal"}'),
}


async def test_odm_nonsense_is_logged_with_the_batch_and_never_recorded(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await side.stop_sim()
        await loaded_config(site, side, "odd", "batch_types=P2")
        names = [b["name"] for b in await rows(sdb, BATCHES)]
        for case, (code, text) in NONSENSE.items():
            async with FakeOdm(lambda name, c=code, t=text: (c, t.replace("%s", name))) as fake:
                poller = await side.run_once(
                    "odm_poller", "--config", "odd", odm_port=fake.port, poll_interval_s=0.001
                )
            batches = await rows(sdb, BATCHES)
            assert {(b["loaded_to_odm"], b["merge_worthy"], b["merged"]) for b in batches} == {
                ("pending", "pending", "pending")
            }, case
            bad = poller.events("odm_answer_unusable")
            assert sorted(e["batch"] for e in bad) == sorted(fake.asked) == names, case
            assert all(e["batch"] in e["error"] for e in bad), case


async def test_a_batch_the_odm_never_learns_of_fails_after_the_timeout(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await side.stop_sim()
        await loaded_config(site, side, "lost", "batch_types=P2")
        async with FakeOdm(lambda name: (404, '{"error": "unknown batch"}')) as fake:
            await side.run_once("odm_poller", "--config", "lost", odm_port=fake.port)
            assert {b["loaded_to_odm"] for b in await rows(sdb, BATCHES)} == {"pending"}
            await side.run_once(
                "odm_poller",
                "--config",
                "lost",
                odm_port=fake.port,
                odm_unknown_timeout_s=0.001,
                poll_interval_s=0.001,
            )
        batches = await rows(sdb, BATCHES)
        assert {b["loaded_to_odm"] for b in batches} == {"failed"}
        assert all("does not know" in b["note"] for b in batches)
        assert {i["state"] for i in await rows(sdb, ITEMS)} == {"new"}  # requeued


async def test_remove_batch_and_purge_delete_copies_and_a_gone_copy_counts_as_deleted(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        await loaded_config(site, side, "rm", "batch_types=P2")
        out = ippctl(site, "psps", "remove-batch", "rm", "B00000002", "B00000003")
        assert out.returncode == 0, out.stderr
        assert "B00000002: removed from PSPS_rm, 2 files deleted" in out.stdout
        assert "B00000003: removed" in out.stdout
        again = ippctl(site, "psps", "remove-batch", "rm", "B00000002")
        assert "already gone" in again.stdout
        bad = ippctl(site, "psps", "remove-batch", "rm", "B2")
        assert bad.returncode != 0 and "B2" in bad.stderr and "not valid" in bad.stderr
        listing = ippctl(site, "ds", "ls", "PSPS_rm").stdout
        assert "B00000002" not in listing and "B00000004" in listing
        by_name = {b["name"]: b for b in await rows(sdb, BATCHES)}
        assert by_name["B00000002"]["deleted_datastore"] == "succeeded"
        assert by_name["B00000004"]["deleted_datastore"] == "pending"
        # purge B00000004: every copy goes, whatever PSPS said
        pdb = await side.psps_db()
        try:
            await eventually(lambda: _all_status(pdb, "merged", 2), timeout_s=60, what="batches merged")
        finally:
            await pdb.close()
        assert ippctl(site, "psps", "purge", "rm", "B00000004").returncode == 0
        Path(by_name["B00000004"]["fits_path"]).unlink()  # the local copy went by hand
        gone = ippctl(site, "ds", "remove", "PSPS_rm", "B00000004", "--rm")  # and the DataStore's
        assert gone.returncode == 0, gone.stderr
        cleaner = await side.run_once("batch_cleaner", "--config", "rm")
        b4 = {b["name"]: b for b in await rows(sdb, BATCHES)}["B00000004"]
        assert (b4["deleted_datastore"], b4["deleted_dxlayer"], b4["deleted_local"]) == ("succeeded",) * 3
        notes = {(e["batch"], e["target"]): e.get("note") for e in cleaner.events("batch_copy_deleted")}
        assert ("B00000004", "local") in notes
        assert notes[("B00000004", "datastore")] == "already gone from the DataStore"
        assert "B00000004" not in ippctl(site, "ds", "ls", "PSPS_rm").stdout
