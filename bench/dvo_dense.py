"""P2 loading in a medium-deep-like field within the DVO cache's budget (issue 19, point 5).

A field as seed 003 describes the medium-deep ones: ``exposures`` exposures (100) of 60 chips
over one DVO region, every object measured in each, so the region holds exposures x 60 x
``per_chip`` measurements (100 x 60 x 3 400 = 20.4 M; its .cpm about 1.4 GB). Everything is
generated directly as DVO tables and smf catalogs, without pixels; the .cpm is written in
chunks, ordered by object as DVO keeps it, so no step holds it whole.

Run alone: ``.venv/bin/python -m bench.dvo_dense`` (about a minute); ``make bench`` runs it
with the rest. Each case runs in a child process of its own (its peak RSS is the process's VmHWM): a
DvoCache with ``dvo_cache_max_bytes`` enters the box (the smfs queued there, the files'
sizes), then ``load`` exposures are built as P2 batches (smf read, DVO look-ups, fluxes and
ids, checks, FITS and manifest). The anchor is the sparse case: the same exposures over a
region of 2 exposures' measurements, which the cache reads whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from bench.common import Figure
from bench.psps import MJD, _chips, one_region_catalog
from shared.core import ids
from shared.formats import catalogs, dvo
from shared.psps import batches, builders
from shared.psps.dvocache import DEFAULT_BUDGET_BYTES, DvoCache

Array = np.ndarray[Any, Any]
CHIPS = 60
#: Objects written per chunk of the .cpm (each with one measurement per exposure).
CHUNK_OBJECTS = 50_000


def _write_table_chunked(path: Path, columns: tuple[tuple[str, str], ...], rows: int, chunks: Any) -> None:
    """A DVO table file written chunk by chunk: its header for ``rows`` rows, then the
    big-endian rows ``chunks`` yields, then the FITS padding."""
    empty = [
        fits.Column(name=n, format=f, array=np.zeros(0, dtype=dvo.dtype(((n, f),))[n])) for n, f in columns
    ]
    hdu = fits.BinTableHDU.from_columns(empty)
    hdu.header["NAXIS2"] = rows
    stored = dvo.dtype(columns).newbyteorder(">")
    written = 0
    with open(path, "wb") as fh:
        fh.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        fh.write(hdu.header.tostring().encode("ascii"))
        for chunk in chunks:
            fh.write(chunk.astype(stored).tobytes())
            written += len(chunk)
        fh.write(b"\0" * (-(written * stored.itemsize) % 2880))
    if written != rows:
        raise RuntimeError(f"{path}: wrote {written} rows, declared {rows}")


def field(root: Path, exposures: int, per_chip: int, measured: int) -> None:
    """The DVO database: ``exposures`` x 60 chip images, one region whose objects are each
    measured in the first ``measured`` exposures (all of them for the dense field)."""
    db, region = one_region_catalog(root, exposures * CHIPS)
    n_obj = CHIPS * per_chip  # object o is detection o % per_chip of chip o // per_chip
    rng = np.random.default_rng(11)
    cpt = dvo.empty(dvo.CPT_COLUMNS, n_obj)
    cpt["RA"] = 10.0 + rng.uniform(0, 0.05, n_obj)
    cpt["DEC"] = 20.0 + rng.uniform(0, 0.05, n_obj)
    cpt["OBJ_ID"] = np.arange(1, n_obj + 1)
    cpt["CAT_ID"] = 1
    cpt["EXT_ID"] = ids.obj_ids(cpt["RA"], cpt["DEC"]) + np.arange(n_obj)
    cpt["OFF_MEASURE"] = np.arange(n_obj) * measured
    cpt["NMEASURE"] = measured
    files = db.region_files(region)
    files["cpt"].parent.mkdir(parents=True, exist_ok=True)
    dvo.write_atomic(files["cpt"], dvo.table_bytes(dvo.CPT_COLUMNS, cpt))

    def chunks() -> Any:
        for o0 in range(0, n_obj, CHUNK_OBJECTS):
            obj = np.arange(o0, min(o0 + CHUNK_OBJECTS, n_obj))
            exp = np.arange(measured)
            o, e = np.repeat(obj, measured), np.tile(exp, len(obj))
            rows = dvo.empty(dvo.CPM_COLUMNS, len(o))
            rows["RA"], rows["DEC"] = cpt["RA"][o], cpt["DEC"][o]
            rows["AVE_REF"] = o
            rows["OBJ_ID"], rows["CAT_ID"] = o + 1, 1
            rows["IMAGE_ID"] = e * CHIPS + o // per_chip + 1
            rows["DET_ID"] = o % per_chip
            rows["EXT_ID"] = ids.detect_ids(MJD, 10101, o % per_chip) + e * 10**9
            rows["PHOTCODE"] = 10101
            rows["M_TIME"] = MJD + e
            rows["AIRMASS"] = 1.1
            yield rows

    _write_table_chunked(files["cpm"], dvo.CPM_COLUMNS, n_obj * measured, chunks())
    dvo.write_atomic(files["cps"], dvo.table_bytes(dvo.CPS_COLUMNS, dvo.empty(dvo.CPS_COLUMNS, 0)))


def _smfs(root: Path, load: int, per_chip: int) -> list[Path]:
    paths = []
    rng = np.random.default_rng(5)
    for e in range(load):
        chips = _chips(e, CHIPS, per_chip, rng, 10_001 + e * CHIPS)
        path = root / f"o{e}.smf"
        path.write_bytes(catalogs.smf_bytes({"EXPTIME": 30.0}, chips))
        paths.append(path)
    return paths


def child(root: Path, budget: int, smfs: int, load: int) -> dict[str, Any]:
    """In its own process: enter the box, then build ``load`` P2 batches."""
    cache = DvoCache(root / "dvo", budget)
    plan = cache.enter_box(cache.regions(), smfs)
    times = []
    for e, smf in enumerate(sorted(root.glob("o*.smf"))[:load]):
        frame = {
            "cam_id": e + 1, "chip_id": e + 1, "exp_id": e + 1, "exp_name": f"o{e}", "filter": "r.00000",
            "exp_time": 30.0, "airmass": 1.1, "ra": 10.0, "decl": 20.0, "software_ver": "bench",
        }  # fmt: skip
        started = time.perf_counter()
        _, chips = catalogs.read_smf(smf)
        result = builders.p2_batch(frame, chips, cache, survey_id=0, smf_md5="0" * 32)
        batches.write(root / "out", f"B{e + 1:08d}", "P2", "bench", result.tables)
        times.append(time.perf_counter() - started)
        if result.detections != CHIPS * len(chips[0].table) or result.missing:
            raise RuntimeError(f"dense bench: exposure {e} lost detections")
    hwm = next(
        int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )  # fmt: skip
    return {
        "mode": plan.mode,
        "dvo_bytes": plan.dvo_bytes,
        "bytes_per_smf": plan.bytes_per_smf,
        "times_s": times,
        "peak_rss": hwm,
        "cache_peak": cache.peak_bytes,
    }


def _run_child(root: Path, budget: int, smfs: int, load: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.dvo_dense", str(root), str(budget), str(smfs), str(load)],
        capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(
    exposures: int = 100, per_chip: int = 3400, load: int = 3, budget: int = DEFAULT_BUDGET_BYTES
) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="ipp-bench-dense-") as tmp:
        dense, sparse = Path(tmp) / "dense", Path(tmp) / "sparse"
        started = time.perf_counter()
        field(dense / "dvo", exposures, per_chip, exposures)
        made_s = time.perf_counter() - started
        field(sparse / "dvo", exposures, per_chip, load)
        for root in (dense, sparse):
            _smfs(root, load, per_chip)
        d = _run_child(dense, budget, exposures, load)
        s = _run_child(sparse, budget, exposures, load)
        w = _run_child(dense, 4 * budget, exposures, load)  # what an unbounded cache would do
    measurements = exposures * CHIPS * per_chip
    warm_d, warm_s = float(np.mean(d["times_s"][1:])), float(np.mean(s["times_s"][1:]))
    return [
        Figure(
            f"P2 batch, medium-deep field ({measurements / 1e6:.1f}M measurements, {exposures} exposures)",
            warm_d,
            warm_s,
            "s",
            "the sparse field (its exposures only, read whole)",
            "<= 5x the sparse field",
            warm_d <= 5 * warm_s,
            note=(
                f"{d['mode']} mode ({d['dvo_bytes'] / 1e9:.2f} GB of DVO, "
                f"{d['bytes_per_smf'] / 1e6:.0f} MB per queued smf); first exposure "
                f"{d['times_s'][0]:.1f} s with the index build, then "
                f"{', '.join(f'{t:.2f}' for t in d['times_s'][1:])} s; sparse ({s['mode']}): "
                f"{', '.join(f'{t:.2f}' for t in s['times_s'])} s; field made in {made_s:.0f} s"
            ),
        ),
        Figure(
            "Peak RSS of a loader in the medium-deep field",
            d["peak_rss"] / 2**30,
            budget / 2**30,
            "GiB",
            "dvo_cache_max_bytes",
            "<= the budget",
            d["peak_rss"] <= budget,
            note=(
                f"the cache held at most {d['cache_peak'] / 2**20:.0f} MiB; with 4x the budget the "
                f"region is read {w['mode']}: peak RSS {w['peak_rss'] / 2**30:.2f} GiB, P2 batches "
                f"{', '.join(f'{t:.2f}' for t in w['times_s'])} s; the sparse case peaked at "
                f"{s['peak_rss'] / 2**30:.2f} GiB"
            ),
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 5:  # one case, in the child process measure() starts
        root_arg, budget_arg, smfs_arg, load_arg = sys.argv[1:5]
        print(json.dumps(child(Path(root_arg), int(budget_arg), int(smfs_arg), int(load_arg))))
    else:  # python -m bench.dvo_dense: these figures alone
        for figure in measure():
            print(f"{figure.name}: {figure.ours:.2f} {figure.unit}")
            print(f"  vs {figure.anchor:.2f} ({figure.anchor_name}); {figure.note}")
