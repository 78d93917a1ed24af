"""The synthetic sky and instrument: chip layout, WCS, a seeded star field, skycells.

Chips are named as GPC1's OTAs (XY01 ... XY76, the 8x8 grid without its corners). Every chip
covers ``CHIP_DEG`` degrees whatever its pixel size, so small test images and large
benchmark images see the same sky. WCS is a linear tangent-plane approximation, which is
plenty for fields a few tenths of a degree wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

CHIP_DEG = 0.05
CHIP_PITCH_DEG = 0.055
#: GPC1 OTA names: columns 0-7, rows 0-7, without the four corners.
OTAS: tuple[str, ...] = tuple(
    f"XY{col}{row}"
    for row in range(8)
    for col in range(8)
    if (col, row) not in ((0, 0), (7, 0), (0, 7), (7, 7))
)
FILTERS = ("g", "r", "i", "z", "y")
#: Photometric zero points (mag for 1 count/s) and extinction per filter.
ZERO_POINTS = {"g": 24.4, "r": 24.6, "i": 24.5, "z": 24.1, "y": 23.2}


def chip_names(count: int) -> list[str]:
    """The first ``count`` OTAs, taken from the centre of the focal plane outwards."""
    if not 1 <= count <= len(OTAS):
        raise ValueError(f"chips must be 1..{len(OTAS)}, got {count}")
    centre = sorted(OTAS, key=lambda n: ((int(n[2]) - 3.5) ** 2 + (int(n[3]) - 3.5) ** 2, n))
    return sorted(centre[:count])


@dataclass(frozen=True)
class Wcs:
    """Linear WCS: pixel (x, y), 0-based, to (ra, dec) in degrees."""

    ra0: float
    dec0: float
    x0: float
    y0: float
    scale_deg: float

    def to_sky(self, x: Array, y: Array) -> tuple[Array, Array]:
        cosd = math.cos(math.radians(self.dec0))
        return (
            self.ra0 + (np.asarray(x) - self.x0) * self.scale_deg / cosd,
            self.dec0 + (np.asarray(y) - self.y0) * self.scale_deg,
        )

    def to_pixel(self, ra: Array, dec: Array) -> tuple[Array, Array]:
        cosd = math.cos(math.radians(self.dec0))
        return (
            self.x0 + (np.asarray(ra) - self.ra0) * cosd / self.scale_deg,
            self.y0 + (np.asarray(dec) - self.dec0) / self.scale_deg,
        )

    def header(self) -> dict[str, Any]:
        return {
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CRVAL1": self.ra0,
            "CRVAL2": self.dec0,
            "CRPIX1": self.x0 + 1,
            "CRPIX2": self.y0 + 1,
            "CD1_1": self.scale_deg / math.cos(math.radians(self.dec0)),
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": self.scale_deg,
        }


def chip_wcs(ra: float, dec: float, class_id: str, size: int) -> Wcs:
    """Where chip ``class_id`` looks when the boresight is at (ra, dec)."""
    col, row = int(class_id[2]), int(class_id[3])
    cosd = math.cos(math.radians(dec))
    return Wcs(
        ra0=ra + (col - 3.5) * CHIP_PITCH_DEG / cosd,
        dec0=dec + (row - 3.5) * CHIP_PITCH_DEG,
        x0=(size - 1) / 2,
        y0=(size - 1) / 2,
        scale_deg=CHIP_DEG / size,
    )


@dataclass(frozen=True)
class StarField:
    ra: Array
    dec: Array
    mag: dict[str, Array]

    def within(self, ra_min: float, ra_max: float, dec_min: float, dec_max: float) -> Array:
        return np.nonzero(
            (self.ra >= ra_min) & (self.ra < ra_max) & (self.dec >= dec_min) & (self.dec < dec_max)
        )[0]


def star_field(seed: int, ra: float, dec: float, half_width_deg: float, stars_per_chip: int) -> StarField:
    """A seeded field of stars around (ra, dec), dense enough for ``stars_per_chip``."""
    rng = np.random.default_rng([seed, 1])
    area = (2 * half_width_deg) ** 2
    n = round(stars_per_chip * area / CHIP_DEG**2)
    cosd = math.cos(math.radians(dec))
    ras = ra + rng.uniform(-half_width_deg, half_width_deg, n) / cosd
    decs = dec + rng.uniform(-half_width_deg, half_width_deg, n)
    base = 16.0 + 5.0 * rng.power(2.5, n)  # more faint stars than bright ones
    colours = rng.normal(0.4, 0.3, n)
    mags = {f: base + colours * (i - 1) * 0.3 for i, f in enumerate(FILTERS)}
    return StarField(ras, decs, mags)


@dataclass(frozen=True)
class Skycell:
    skycell_id: str
    tess_id: str
    wcs: Wcs
    size: int


TESS_ID = "RINGS.V3"


def skycells(ra: float, dec: float, half_width_deg: float, size: int) -> list[Skycell]:
    """A square tessellation of the field into skycells as large as a chip, named like
    ``skycell.1133.081`` (projection cell . index)."""
    n = max(1, math.ceil(2 * half_width_deg / CHIP_DEG))
    cosd = math.cos(math.radians(dec))
    cells = []
    projection = 1000 + math.floor((dec + 90) * 10) % 1000
    for j in range(n):
        for i in range(n):
            # rounded so the centre survives a trip through a DOUBLE column exactly
            c_ra = round(ra + (-half_width_deg + (i + 0.5) * CHIP_DEG) / cosd, 9)
            c_dec = round(dec - half_width_deg + (j + 0.5) * CHIP_DEG, 9)
            cells.append(
                Skycell(
                    f"skycell.{projection}.{j * n + i:03d}",
                    TESS_ID,
                    Wcs(c_ra, c_dec, (size - 1) / 2, (size - 1) / 2, CHIP_DEG / size),
                    size,
                )
            )
    return cells


def skycell_from_row(row: dict[str, Any]) -> Skycell:
    """A skycell as the ``skycell`` table records it."""
    size = int(row["size_px"])
    return Skycell(
        str(row["skycell_id"]),
        str(row["tess_id"]),
        Wcs(float(row["ra"]), float(row["decl"]), (size - 1) / 2, (size - 1) / 2, float(row["scale_deg"])),
        size,
    )
