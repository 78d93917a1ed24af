"""Processing logs as the IPP writes them, at the sizes production makes them.

Each message is laid out the way psLib's ``psLogMsgV`` writes one (``psLib/src/sys/
psLogMsg.c`` in the public IPP source): a head line ``YYYY-MM-DD HH:MM:SSZ| host |L|name|``
and then each line of the message indented by two spaces per level (at most ten). The
messages are the kind a chip or skycell run logs: files read and written, per-cell
statistics, detections and fit results, with numbers that vary as real ones do. Seed 000
gives one sample log: 517 698 bytes, gzipped to 46 548 (91 %); the text made here compresses
about as well, so compression costs and ratios measured on it mean something.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

#: The sample log of seed 000.
SEED_LOG_BYTES = 517_698
SEED_LOG_GZIP_BYTES = 46_548

_PROGRAMS = ("ppImage", "psphot", "psastro", "pswarp", "ppStack", "ppSub")
_LEVELS = ("I", "I", "I", "I", "4", "5", "W")


def _message(rng: random.Random, component: str, n: int) -> str:
    """One message of a processing log, chosen among the kinds a run writes; most are the
    routine lines a run repeats, a few carry measured numbers."""
    cell = f"xy{rng.randrange(8)}{rng.randrange(8)}"
    kind = rng.randrange(16)
    if kind == 0:
        return f"reading neb://any/gpc1/{component}/{component}.{cell}.fits"
    if kind == 1:
        return f"cell {cell}: overscan {rng.uniform(1000, 1200):.1f}, bias {rng.uniform(-2, 2):.2f}"
    if kind == 2:
        return f"cell {cell}: sky {rng.uniform(80, 900):.1f} counts, stdev {rng.uniform(4, 40):.1f}"
    if kind == 3:
        return f"psf model PS_MODEL_PS1_V1: fwhm {rng.uniform(3.5, 8):.2f} px, {rng.randrange(40, 400)} stars"
    if kind == 4:
        return (
            f"source {n}: x {rng.uniform(0, 4846):.1f} y {rng.uniform(0, 4868):.1f} "
            f"mag {rng.uniform(-16, -5):.3f}"
        )
    if kind == 5:
        return f"cell {cell}: applying mask PPIMAGE.MASK, bias, dark, flat"
    if kind == 6:
        return f"cell {cell}: done"
    if kind == 7:
        return f"wrote {component}.{cell}.b1.fits"
    if kind in (8, 9):
        return f"cell {cell}: pattern correction PATTERN.ROW.AMP applied"
    if kind in (10, 11):
        return f"cell {cell}: linearity correction LINEARITY applied"
    if kind == 12:
        return f"timing: {rng.choice(_PROGRAMS)} step {rng.randrange(1, 30)} {rng.uniform(0, 40):.2f} sec"
    return f"cell {cell}: no saturated pixels above SATURATION threshold"


def ipp_log(
    seed: int, target_bytes: int, *, component: str = "o4741g0239o.XY05", host: str = "ipp054"
) -> bytes:
    """About ``target_bytes`` of log text (never less), the same for the same arguments."""
    rng = random.Random(seed)
    when = datetime(2012, 11, 14, 10, 0, tzinfo=UTC)
    program = _PROGRAMS[seed % len(_PROGRAMS)]
    parts: list[str] = []
    size = 0
    n = 0
    while size < target_bytes:
        when += timedelta(seconds=rng.randrange(0, 3))
        level = rng.choice(_LEVELS)
        indent = " " * min(10, 2 * (3 if level in "IW" else int(level)))
        head = f"{when:%Y-%m-%d %H:%M:%S}Z| {host} |{level}|{program}|\n"
        text = f"{head}{indent}{_message(rng, component, n)}\n"
        parts.append(text)
        size += len(text)
        n += 1
    return "".join(parts).encode()
