"""``python -m bench [--quick]``: run every benchmark, write bench/results/summary.md (and
the scale curve, bench/results/scale.md and scale.png; ``python -m bench.scale --large`` adds
10^7 component rows)."""

from __future__ import annotations

import argparse
import asyncio

from bench import claims, cleanup, dist, dvo_dense, idle, psps, scale, survey, tracking, update
from bench.common import Figure, write_results


async def run_all(quick: bool) -> list[Figure]:
    figures = [await claims.measure(items=1000 if quick else 3000, rounds=3 if quick else 5)]
    figures += await idle.measure(window_s=15 if quick else 60)
    figures.append(await cleanup.measure(runs=3 if quick else 20, chips=20 if quick else 60))
    figures.append(
        await update.measure(chips=4 if quick else 8, size=256 if quick else 1024, rounds=2 if quick else 3)
    )
    figures += await dist.measure(
        chips=4 if quick else 8, size=256 if quick else 1024, rounds=2 if quick else 3
    )
    figures += await asyncio.to_thread(psps.measure, 60, 3800, 1_000_000 if quick else 10_000_000)
    figures += await asyncio.to_thread(dvo_dense.measure, 10 if quick else 100, 340 if quick else 3400)
    figures += await tracking.measure(batches=500 if quick else 3000, rows=100_000 if quick else 1_000_000)
    figures.append(survey.chip_seconds_per_megapixel(size=512 if quick else 1024))
    figures.append(
        await survey.survey_rate(
            chips=8 if quick else 60, size=256 if quick else 1024, stars_per_chip=300 if quick else 4400
        )
    )
    figures += await scale.measure(scale.SIZES[:2] if quick else scale.SIZES)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    args = parser.parse_args()
    figures = asyncio.run(run_all(args.quick))
    path = write_results(figures)
    print(path.read_text())
    return 0 if all(f.ok for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
