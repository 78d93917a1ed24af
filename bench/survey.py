"""Survey generation rate and the reference processor's chip time per megapixel.

No targets (the issue asks only to report them) and no anchor: the figures are the
project's own cost of making test data. The survey runs at benchmark scale: 60 chips of
1024x1024 pixels with about 4 000 detections each per exposure.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Figure, bench_database
from shared.storage.store import Storage
from sim import imaging, processor
from sim.processor import ChipInputs, Exposure
from sim.sky import chip_wcs, star_field
from sim.survey import Survey, SurveyOptions, ensure_volumes


def _raw(size: int, stars_per_chip: int) -> tuple[bytes, ChipInputs]:
    field = star_field(1, 10.0, 20.0, 0.3, stars_per_chip)
    e = Exposure(1, "o4936g0001o", "r", 54936.25, 30.0, 1.1, 10.0, 20.0)
    wcs = chip_wcs(e.ra, e.dec, "XY33", size)
    x, y = wcs.to_pixel(field.ra, field.dec)
    inside = (x >= 1) & (x < size - 2) & (y >= 1) & (y < size - 2)
    counts = e.exptime * 10 ** (-0.4 * (field.mag["r"][inside] - e.zpt_obs))
    stars = imaging.render_stars(size, x[inside], y[inside], counts, 2.5)
    rng = np.random.default_rng(1)
    pixels = 1000 + rng.poisson(np.clip((200 + stars) * 1.2, 0, None)) / 1.2
    raw = np.clip(np.round(pixels + rng.normal(0, 5, (size, size))), 0, 65535).astype(np.uint16)
    return imaging.fits_image(raw), ChipInputs("XY33", e, 1, 1, wcs)


def chip_seconds_per_megapixel(size: int = 1024, repeats: int = 5) -> Figure:
    raw, inputs = _raw(size, 4400 * (size // 1024) ** 2 or 4400)
    block = processor.recipe("chip")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = processor.process_chip(raw, block, inputs, dump=b"")
        times.append(time.perf_counter() - started)
    per_mp = statistics.median(times) / (size * size / 1e6)
    return Figure(
        f"reference processor chip time ({size}x{size})",
        per_mp,
        per_mp,
        "s/megapixel",
        "none (report only)",
        "report only",
        True,
        note=f"median of {repeats}; {len(result.catalog.table)} detections per chip",
    )


async def survey_rate(
    exposures: int = 2, chips: int = 60, size: int = 1024, stars_per_chip: int = 4400
) -> Figure:
    async with bench_database("ipp_bench_survey") as (_settings, db):
        with tempfile.TemporaryDirectory(prefix="ipp-bench-") as tmp:
            storage = Storage(db)
            await ensure_volumes(storage, Path(tmp), "bench")
            options = SurveyOptions(
                exposures=exposures,
                chips=chips,
                seed=1,
                site="bench",
                size=size,
                stars_per_chip=stars_per_chip,
                dvo_dir=Path(tmp) / "dvo",
                progress=False,
            )
            started = time.perf_counter()
            summary = await Survey(db, storage, options).run()
            elapsed = time.perf_counter() - started
    rate = exposures / (elapsed / 60)
    per_exposure = summary.detections / exposures
    return Figure(
        f"survey generation ({chips} chips x {size}px)",
        rate,
        rate,
        "exposures/min",
        "none (report only)",
        "report only",
        True,
        note=(
            f"{exposures} exposures in {elapsed:.0f} s, {per_exposure:.0f} detections "
            f"per exposure, {summary.files} files ({summary.bytes / 1e9:.2f} GB), "
            f"{len(summary.stack_runs)} stacks, {len(summary.diff_runs)} diff runs"
        ),
    )
