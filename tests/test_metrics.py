"""Metrics: the loading summary printed by ippctl metrics, the agent's samples and plots, its
read-only status page and /metrics, and the site-wide totals the agents' counters add up to."""

from __future__ import annotations

import itertools
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from shared.core.settings import load_settings, parse_dsn
from shared.db.database import Database
from shared.db.queries import Query
from shared.db.schema import create_database, drop_database
from shared.observe import metrics, plots
from shared.processing import runs
from tests.helpers import AgentProcess, eventually
from tests.mirror_fixture import free_port
from tests.psps_fixture import psps_side
from tests.survey_fixture import SurveySite, configure_loading, ippctl, sibling, survey_site

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
    summary = ippctl(site, "metrics", "nosuch")
    assert summary.returncode == 1 and "no loading config 'nosuch'" in summary.stderr


async def test_metrics_prints_the_loading_summary_with_the_counts_of_the_batches(site, sdb, tmp_path):
    configure(site, "sum")
    empty = ippctl(site, "metrics", "sum")
    assert empty.returncode == 0 and "ippToPsps loading summary" in empty.stdout
    # queued, nothing loaded yet
    assert (
        "| P2 |              0.0 |             0 |               0.0 |                0 |          never |"
        in empty.stdout
    )
    assert re.search(r"^DVO label {31}ipp\.dvo$", empty.stdout, re.M)
    assert ippctl(site, "psps", "init", "sum").returncode == 0
    assert ippctl(site, "psps", "queue", "sum").returncode == 0
    loader = AgentProcess(
        "loader", site.dsn, tmp_path, "--once", "--config", "sum", var_dir=str(site.var_dir)
    )
    assert await loader.wait(timeout_s=120) == 0
    batches = await sdb.fetch_all(STAGES)
    out = ippctl(site, "metrics", "sum")
    assert out.returncode == 0, out.stderr
    rates, stages = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in out.stdout.splitlines()
        if line.startswith("| P2 |")
    ]
    p2 = [b for b in batches if b["type"] == "P2"]
    # Type, batches per hour, last 24 hours, per day this week, total detections, last published
    assert rates[2] == str(len(p2)) and rates[4] == str(sum(b["detections"] for b in p2))
    assert rates[5].endswith("hours ago")
    # Type, DVO, then Pend Succ Fail of each stage: every P2 batch processed and published
    assert stages[1] == str(len(p2)) and stages[2].split() == [str(len(p2))] == stages[3].split()
    as_json = json.loads(ippctl(site, "metrics", "all", "--json").stdout)
    assert as_json["loading"]["stages"]["loaded_to_datastore"]["succeeded"] == len(batches)
    assert as_json["runs"]["chip"] == {"full": 3}
    assert "Runs by stage and state" in ippctl(site, "metrics", "--lifecycle").stdout


#: seed 003's example output of metrics.py, from its title to the end of the second table.
SEED_003_SUMMARY = (
    '                ippToPsps loading summary\n'
    '\n'
    'Time now                                2011-09-29 11:54:33\n'
    'Loading epoch                           2011-08-16\n'
    'DVO label                               LAP.ThreePi.20110809\n'
    '\n'
    '+----+------------------+---------------+-------------------+------------------+----------------+\n'
    '|Type| batches per hour | last 24 hours | per day this week | total detections | last published |\n'
    '+----+------------------+---------------+-------------------+------------------+----------------+\n'
    '| P2 |              0.0 |           283 |             329.4 |       1855730051 |  4.6 hours ago |\n'
    '| ST |              0.0 |         12936 |            4539.0 |        185807608 |  3.7 hours ago |\n'
    '+----+------------------+---------------+-------------------+------------------+----------------+\n'
    '\n'
    '+----+-------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+\n'
    '|Type|  DVO  |          processed|loaded_to_datastore|      loaded_to_ODM|       merge_worthy|             merged|  deleted_datastore|    deleted_dxlayer|      deleted_local|\n'  # noqa: E501
    '|    |       | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  | Pend  Succ  Fail  |\n'  # noqa: E501
    '+----+-------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+\n'
    '| P2 |  8140 |       8101    39  |    2  8099        | 2041  6049     9  |       6049        |  313  5736        |       5736        | 5736              |                   |\n'  # noqa: E501
    '| ST | 32309 |      31684   625  |    5 31679        |24617  7062        |       7062        | 7062              |                   |                   |                   |\n'  # noqa: E501
    '+----+-------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+-------------------+\n'
)  # fmt: skip


def test_the_summary_is_laid_out_exactly_as_seed_003_shows_metrics_py_s():
    now = datetime(2011, 9, 29, 11, 54, 33)

    def stages(**given: tuple[int, int, int]) -> dict[str, dict[str, int]]:
        return {
            s: dict(zip(metrics.OUTCOMES, given.get(s, (0, 0, 0)), strict=True)) for s in metrics.BATCH_STAGES
        }

    p2 = metrics.TypeReport(
        "P2",
        metrics.TypeRates(0, 283, 2306, 1855730051, 8140, now - timedelta(hours=4.6)),
        8140,
        stages(
            processed=(0, 8101, 39),
            loaded_to_datastore=(2, 8099, 0),
            loaded_to_odm=(2041, 6049, 9),
            merge_worthy=(0, 6049, 0),
            merged=(313, 5736, 0),
            deleted_datastore=(0, 5736, 0),
            deleted_dxlayer=(5736, 0, 0),
        ),
    )
    st = metrics.TypeReport(
        "ST",
        metrics.TypeRates(0, 12936, 31773, 185807608, 32309, now - timedelta(hours=3.7)),
        32309,
        stages(
            processed=(0, 31684, 625),
            loaded_to_datastore=(5, 31679, 0),
            loaded_to_odm=(24617, 7062, 0),
            merge_worthy=(0, 7062, 0),
            merged=(7062, 0, 0),
        ),
    )
    report = metrics.ConfigReport("lap", now, datetime(2011, 8, 16), "LAP.ThreePi.20110809", [p2, st])
    assert metrics.format_report(report) == SEED_003_SUMMARY


async def test_the_agent_writes_each_sample_into_the_czartool_database(site, sdb, tmp_path):
    """Seed 003: metrics.py's "vital statistics are stored in the czartool database": per
    sample, config and type, the summary's rates and DVO count, and every stage's counts."""
    configure(site, "cz")
    czar_dsn = sibling(site.dsn, "czar")
    settings = load_settings(environ={}, db_dsn=czar_dsn)
    await create_database(settings, parse_dsn(czar_dsn))
    try:
        for _ in range(2):  # two samples: two points of each series
            agent = AgentProcess(
                "metrics", site.dsn, tmp_path, "--once", "--config", "cz",
                czartool_dsn=czar_dsn, metrics_port=free_port(), metrics_plot_dir=str(tmp_path / "plots"),
            )  # fmt: skip
            assert await agent.wait(timeout_s=120) == 0, agent.output()
            assert (
                agent.events("czartool_connected") and agent.events("metrics_sampled")[0]["czartool_rows"] > 0
            )
        czar = await Database.connect(settings, czar_dsn)
        try:
            rates = await czar.fetch_all(
                Query("t_r", "SELECT config, batch_type, dvo, last_24_hours FROM ipptopsps_rates", "test")
            )
            stages = await czar.fetch_all(
                Query("t_st", "SELECT batch_type, stage, pending FROM ipptopsps_stages", "test")
            )
        finally:
            await czar.close()
        queued = await sdb.fetch_all(
            Query(
                "t_q", "SELECT type, COUNT(*) AS n FROM psps_item WHERE config = 'cz' GROUP BY type", "test"
            )
        )
        want = {(r["type"], r["n"]) for r in queued}
        assert {(r["batch_type"], r["dvo"]) for r in rates} == want and len(rates) == 2 * len(want)
        assert {r["config"] for r in rates} == {"cz"}
        assert len(stages) == 2 * len(want) * len(metrics.BATCH_STAGES)
    finally:
        await drop_database(settings, parse_dsn(czar_dsn))


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
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:  # issue 33: none were sent
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
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
