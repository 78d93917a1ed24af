"""Metrics: the loading summary printed by ippctl metrics, the agent's samples and plots, its
read-only status page and /metrics, and the site-wide totals the agents' counters add up to."""

from __future__ import annotations

import itertools
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from shared.db.queries import Query
from shared.observe import plots
from shared.processing import runs
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port
from tests.psps_fixture import psps_side
from tests.survey_fixture import SurveySite, configure_loading, ippctl, survey_site

_numbers = itertools.count()
STAGES = Query(
    "t_st",
    "SELECT processed, loaded_to_datastore, merged, deleted_local, type, detections FROM psps_batch",
    "test",
)


@pytest.fixture
async def site(test_dsn: str, tmp_path: Path) -> AsyncIterator[SurveySite]:
    async for s in survey_site(
        test_dsn, f"mt{next(_numbers)}", tmp_path / "site", exposures=3, chips=2, seed=41
    ):
        yield s


def configure(site: SurveySite, name: str) -> None:
    configure_loading(site, name, "batch_types=P2,ST")
    assert ippctl(site, "psps", "queue", name).returncode == 0


def fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


async def test_density_plots_show_pending_items_per_batch_type(site, sdb, tmp_path):
    configure(site, "sky")
    out = ippctl(site, "plot", "sky", "density", "--out", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    written = [Path(line) for line in out.stdout.split()]
    # seed 003: config_batchType_YYYY_MMDD_HHMMSS.png, one per type; OB has nothing pending
    assert sorted(plots.plot_kind(p.name) or "" for p in written) == ["sky_OB", "sky_P2", "sky_ST"]
    assert all(re.fullmatch(r"sky_(P2|ST|OB)_20[0-9]{2}_[0-9]{4}_[0-9]{6}\.png", p.name) for p in written)
    for path in written:
        assert path.name.endswith(".png") and path.parent == tmp_path / "plots"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300
    missing = ippctl(site, "plot", "nosuch", "density")
    assert missing.returncode != 0 and "nosuch" in missing.stderr


async def test_metrics_prints_the_loading_summary_with_the_counts_of_the_batches(site, sdb, tmp_path):
    configure(site, "sum")
    empty = ippctl(site, "metrics", "sum")
    assert empty.returncode == 0 and "(no batches yet)" in empty.stdout
    assert ippctl(site, "psps", "init", "sum").returncode == 0
    loader = AgentProcess(
        "loader", site.dsn, tmp_path, "--once", "--config", "sum", var_dir=str(site.var_dir)
    )
    assert await loader.wait(timeout_s=120) == 0
    batches = await sdb.fetch_all(STAGES)
    out = ippctl(site, "metrics", "sum")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    p2 = [b for b in batches if b["type"] == "P2"]
    # type, per hour, last 24 h, per day this week, batches, detections, last published
    assert lines["P2"][1:3] == [str(len(p2))] * 2
    assert lines["P2"][4:6] == [str(len(p2)), f"{sum(b['detections'] for b in p2):,}"]
    assert lines["processed"][1:] == ["0", str(len(batches)), "0"]
    assert lines["merged"][1:] == [str(len(batches)), "0", "0"]
    as_json = json.loads(ippctl(site, "metrics", "all", "--json").stdout)
    assert as_json["loading"]["stages"]["loaded_to_datastore"]["succeeded"] == len(batches)
    assert as_json["runs"]["chip"] == {"full": 3}
    assert "Runs by stage and state" in ippctl(site, "metrics", "--lifecycle").stdout


async def test_cleanup_counts_the_bytes_it_freed_in_the_site_totals(site, sdb, tmp_path):
    objects = Query("t_o", "SELECT ext_id, bytes FROM storage_object", "test")
    before = {r["ext_id"]: r["bytes"] for r in await sdb.fetch_all(objects)}
    await runs.set_state(sdb, "chip", "goto_cleaned", run_id=1)
    agent = AgentProcess("cleanup", site.dsn, tmp_path, "--once")
    assert await agent.wait(timeout_s=120) == 0
    after = {r["ext_id"] for r in await sdb.fetch_all(objects)}
    # what the rules deleted (logs are replaced by their compressed copies, not freed)
    freed = sum(n for key, n in before.items() if key not in after and not key.endswith(".log"))
    totals = json.loads(ippctl(site, "metrics", "--json").stdout)["totals"]
    assert totals["cleanup.bytes_freed"] == freed > 0
    assert totals["cleanup.components_cleaned"] == 2


async def test_the_agent_samples_plots_and_serves_a_status_page_and_prometheus_metrics(site, sdb, tmp_path):
    async with psps_side(site, tmp_path) as side:
        configure(site, "web")
        assert ippctl(site, "psps", "init", "web").returncode == 0
        port = free_port()
        agent = side.agent(
            "metrics",
            "--config",
            "web",
            metrics_port=port,
            metrics_plot_dir=str(tmp_path / "plots"),
            metrics_interval_s=1,
        )
        base = f"http://127.0.0.1:{port}"
        await eventually(lambda: agent.events("metrics_sampled"), timeout_s=60, what="the first sample")
        samples = await sdb.fetch_all(
            Query("t_s", "SELECT metric, labels, value FROM metrics_sample", "test")
        )
        got = {(s["metric"], s["labels"]): s["value"] for s in samples}
        assert got[("runs", "stage=chip,state=full")] == 3
        assert got[("psps_items", "config=web,type=P2,state=new")] == 3
        names = sorted(plots.plot_kind(p.name) or p.name for p in (tmp_path / "plots").glob("*.png"))
        assert names == ["lifecycle", "web_P2", "web_ST", "web_progress"]

        code, body, kind = fetch(f"{base}/")
        page = body.decode()
        assert code == 200 and kind.startswith("text/html")
        for text in (
            "Clients and heartbeats",
            "dist_server",
            "metrics",
            "PSPS loading",
            "Runs by stage and state",
            "web_P2_",
        ):
            assert text in page, text
        code, body, kind = fetch(f"{base}/metrics")
        assert code == 200 and kind.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        runs_full = [
            s.value for s in families["ipp_runs"].samples if s.labels == {"stage": "chip", "state": "full"}
        ]
        assert runs_full == [3.0]
        published = [
            s.value
            for s in families["ipp_psps_batches"].samples
            if s.labels == {"config": "web", "type": "IN", "stage": "processed", "outcome": "succeeded"}
        ]
        assert published == [1.0]
        ages = {s.labels["agent"] for s in families["ipp_client_heartbeat_age_seconds"].samples}
        assert {"dist_server", "metrics"} <= ages
        plot = next(n for n in (tmp_path / "plots").glob("web_P2_*.png"))
        code, body, _ = fetch(f"{base}/plots/{plot.name}")
        assert code == 200 and body.startswith(b"\x89PNG")
        assert fetch(f"{base}/plots/..%2F..%2Fetc%2Fpasswd")[0] == 404
        code, _, _ = fetch(f"{base}/nosuch")
        assert code == 404
        # once nothing is pending, the density plots go (they would show a stale sky)
        await side.run_once("loader", "--config", "web")

        def plot_kinds() -> list[str]:
            return sorted(plots.plot_kind(p.name) or p.name for p in (tmp_path / "plots").glob("*.png"))

        await eventually(
            lambda: plot_kinds() == ["lifecycle", "web_progress"],
            timeout_s=60,
            what="the density plots to go",
        )
        req = urllib.request.Request(f"{base}/", method="POST", data=b"x")
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError("the status page accepted a POST")
        except urllib.error.HTTPError as exc:
            assert exc.code == 405  # read-only
