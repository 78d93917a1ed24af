"""Builds the survey's DVO database from the detections as they are made.

Each detection is matched to the star that produced it (the nearest rendered star within
2 pixels, through a lookup grid of star positions per chip); unmatched detections (noise
peaks) become objects of their own. Objects sit in the SkyTable region of their position.
EXT_ID carries the PSPS objID of the object and the PSPS detectID of each measurement
(REFERENCE 10). Photcodes give C_LAM (millimag) and K such that the PSPS zero point
0.001*C_LAM + K*(airmass-1) - M_CAL equals the chip's ZPT_OBS.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from shared.core import ids
from shared.formats import dvo
from sim.processor import STACK_CCD, Exposure, photcode, stack_extern_id
from sim.sky import FILTERS, ZERO_POINTS, Skycell, StarField, Wcs

Array = np.ndarray[Any, Any]
EXTINCTION_K = -0.1
REGION_STEP_DEG = 0.1


class DvoBuilder:
    def __init__(self, root: Path, ra: float, dec: float, half_width: float) -> None:
        self.database = dvo.DvoDatabase(root)
        cosd = math.cos(math.radians(dec))
        self.regions = dvo.region_grid(
            ra - half_width / cosd,
            ra + half_width / cosd,
            dec - half_width,
            dec + half_width,
            REGION_STEP_DEG,
        )
        self.images: list[tuple[Any, ...]] = []
        self.parts: dict[str, list[Array]] = defaultdict(list)
        self.photcodes: set[tuple[int, str, str]] = set()

    def add_chip(
        self,
        e: Exposure,
        class_id: str,
        extern_id: int,
        chip_id: int,
        table: Array,
        stars: tuple[Array, Array, Array],
        field: StarField,
        wcs: Wcs,
    ) -> None:
        """Record one chip image and its detections."""
        image_id = len(self.images) + 1
        code = photcode(e.filter, class_id)
        self.photcodes.add((code, class_id, e.filter))
        size = round(wcs.x0 * 2 + 1)
        self.images.append(
            (
                image_id,
                extern_id,
                chip_id,
                e.exp_id,
                code,
                int(class_id[2:4]),
                e.exptime,
                e.mjd,
                e.airmass,
                f"{e.exp_name}.{class_id}",
                wcs.ra0,
                wcs.dec0,
                wcs.x0 + 1,
                wcs.y0 + 1,
                wcs.scale_deg,
                wcs.scale_deg,
            )
        )
        star = self._match(table, stars, size)
        self._add_measurements(table, star, field, image_id, code, e.mjd, e.airmass)
        self.parts["detect_id"].append(ids.detect_ids(e.mjd, code, table["IPP_IDET"]))

    def add_stack(
        self,
        stack_id: int,
        filter_name: str,
        mjd: float,
        exptime: float,
        table: Array,
        cell: Skycell,
        field: StarField,
    ) -> None:
        """Merge one stack's detections (its cmf) into the database, as addstar does: an
        image with the stack's EXTERN_ID, and measurements matched to the objects of the
        stars behind them; each measurement's EXT_ID is the PSPS stack detection id."""
        image_id = len(self.images) + 1
        extern_id = stack_extern_id(stack_id)
        code = 10000 + 100 * FILTERS.index(filter_name) + STACK_CCD
        self.photcodes.add((code, "stack", filter_name))
        wcs = cell.wcs
        self.images.append(
            (
                image_id,
                extern_id,
                stack_id,
                0,
                code,
                0,
                exptime,
                mjd,
                1.0,
                f"stack.{stack_id}"[:32],
                wcs.ra0,
                wcs.dec0,
                wcs.x0 + 1,
                wcs.y0 + 1,
                wcs.scale_deg,
                wcs.scale_deg,
            )
        )
        sx, sy = wcs.to_pixel(field.ra, field.dec)
        inside = np.nonzero((sx >= 0) & (sx < cell.size) & (sy >= 0) & (sy < cell.size))[0]
        star = self._match(table, (inside, sx[inside], sy[inside]), cell.size)
        self._add_measurements(table, star, field, image_id, code, mjd, 1.0)
        det = np.asarray(table["IPP_IDET"], dtype=np.int64)
        self.parts["detect_id"].append(
            (np.int64(ids.STACK_ID_PREFIX) << 56) + (np.int64(extern_id) << 28) + det
        )

    def _add_measurements(
        self,
        table: Array,
        star: Array,
        field: StarField,
        image_id: int,
        code: int,
        mjd: float,
        airmass: float,
    ) -> None:
        """One image's detections as measurements (all but their detection ids)."""
        matched = star >= 0
        ra = np.where(matched, field.ra[np.maximum(star, 0)], table["RA_PSF"])
        dec = np.where(matched, field.dec[np.maximum(star, 0)], table["DEC_PSF"])
        n = len(table)
        self.parts["star"].append(star)
        self.parts["obj_ra"].append(ra)
        self.parts["obj_dec"].append(dec)
        self.parts["ra"].append(np.asarray(table["RA_PSF"], dtype=np.float64))
        self.parts["dec"].append(np.asarray(table["DEC_PSF"], dtype=np.float64))
        self.parts["mag"].append(np.asarray(table["PSF_INST_MAG"], dtype=np.float32))
        self.parts["det_id"].append(np.asarray(table["IPP_IDET"], dtype=np.int64))
        self.parts["image_id"].append(np.full(n, image_id, dtype=np.int32))
        self.parts["photcode"].append(np.full(n, code, dtype=np.int32))
        self.parts["m_time"].append(np.full(n, mjd, dtype=np.float64))
        self.parts["airmass"].append(np.full(n, airmass, dtype=np.float32))

    @staticmethod
    def _match(table: Array, stars: tuple[Array, Array, Array], size: int) -> Array:
        """Index (into the star field) of the star behind each detection, or -1."""
        index, sx, sy = stars
        grid = np.full((size, size), -1, dtype=np.int64)
        xi, yi = np.round(sx).astype(int), np.round(sy).astype(int)
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        grid[yi[ok], xi[ok]] = np.arange(len(index))[ok]
        dx_det, dy_det = np.asarray(table["X_PSF"]), np.asarray(table["Y_PSF"])
        best = np.full(len(table), -1, dtype=np.int64)
        best_d2 = np.full(len(table), 4.0 + 1e-9)
        for oy in range(-2, 3):
            for ox in range(-2, 3):
                gx = np.clip(np.round(dx_det).astype(int) + ox, 0, size - 1)
                gy = np.clip(np.round(dy_det).astype(int) + oy, 0, size - 1)
                cand = grid[gy, gx]
                has = cand >= 0
                d2 = np.full(len(table), np.inf)
                d2[has] = (sx[cand[has]] - dx_det[has]) ** 2 + (sy[cand[has]] - dy_det[has]) ** 2
                better = d2 < best_d2
                best[better], best_d2[better] = cand[better], d2[better]
        return np.where(best >= 0, index[np.maximum(best, 0)], -1)

    def write(self) -> Path:
        """Write every DVO file; returns the catalog directory."""
        root = self.database.root
        root.mkdir(parents=True, exist_ok=True)
        self._write_images()
        self._write_photcodes()
        data = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.parts.items()}
        has = self._write_regions(data) if data else set()
        self._write_skytable(has)
        return root

    def _write_images(self) -> None:
        rows = dvo.empty(dvo.IMAGES_COLUMNS, len(self.images))
        for i, values in enumerate(self.images):
            for (name, _), value in zip(dvo.IMAGES_COLUMNS, values, strict=True):
                rows[name][i] = value
        dvo.write_atomic(
            self.database.path("Images.dat"), dvo.table_bytes(dvo.IMAGES_COLUMNS, rows, extname="DVO_IMAGE")
        )

    def _write_photcodes(self) -> None:
        codes = sorted(self.photcodes)
        rows = dvo.empty(dvo.PHOTCODE_COLUMNS, len(codes))
        for i, (code, class_id, filter_name) in enumerate(codes):
            rows["CODE"][i] = code
            rows["NAME"][i] = f"GPC1.{filter_name}.{class_id}"
            rows["TYPE"][i] = "DEP"
            rows["C_LAM"][i] = round(ZERO_POINTS[filter_name] * 1000)
            rows["K"][i] = EXTINCTION_K
            rows["FILTER"][i] = filter_name
        dvo.write_atomic(
            self.database.path("Photcodes.dat"),
            dvo.table_bytes(dvo.PHOTCODE_COLUMNS, rows, extname="DVO_PHOTCODE"),
        )

    def _write_regions(self, d: dict[str, Array]) -> set[int]:
        # One object per matched star, one per unmatched detection.
        n = len(d["star"])
        key = np.where(d["star"] >= 0, d["star"], -1 - np.arange(n))
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        obj_ra, obj_dec = d["obj_ra"][first], d["obj_dec"][first]
        written = set()
        for region in self.regions:
            in_region = np.nonzero(region.contains(obj_ra, obj_dec))[0]
            if len(in_region) == 0:
                continue
            self._write_region(region, d, in_region, inverse, obj_ra, obj_dec)
            written.add(region.index)
        return written

    def _write_region(
        self,
        region: dvo.Region,
        d: dict[str, Array],
        objects: Array,
        inverse: Array,
        obj_ra: Array,
        obj_dec: Array,
    ) -> None:
        order = objects[np.lexsort((obj_dec[objects], obj_ra[objects]))]
        ave_ref = np.full(len(obj_ra), -1, dtype=np.int64)
        ave_ref[order] = np.arange(len(order))
        meas = np.nonzero(ave_ref[inverse] >= 0)[0]
        meas = meas[np.argsort(ave_ref[inverse[meas]], kind="stable")]
        refs = ave_ref[inverse[meas]]
        counts = np.bincount(refs, minlength=len(order))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        cpt = dvo.empty(dvo.CPT_COLUMNS, len(order))
        cpt["RA"], cpt["DEC"] = obj_ra[order], obj_dec[order]
        cpt["OBJ_ID"] = np.arange(1, len(order) + 1)
        cpt["CAT_ID"] = region.index
        cpt["EXT_ID"] = ids.obj_ids(obj_ra[order], obj_dec[order])
        cpt["OFF_MEASURE"], cpt["NMEASURE"] = offsets, counts
        cpm = dvo.empty(dvo.CPM_COLUMNS, len(meas))
        for name, src in (
            ("RA", "ra"),
            ("DEC", "dec"),
            ("MAG", "mag"),
            ("DET_ID", "det_id"),
            ("IMAGE_ID", "image_id"),
            ("PHOTCODE", "photcode"),
            ("M_TIME", "m_time"),
            ("AIRMASS", "airmass"),
            ("EXT_ID", "detect_id"),
        ):
            cpm[name] = d[src][meas]
        cpm["AVE_REF"], cpm["OBJ_ID"], cpm["CAT_ID"] = refs, refs + 1, region.index
        cps = self._averages(cpm)
        bounds = {
            "CATID": region.index,
            "NSTARS": len(cpt),
            "NMEAS": len(cpm),
            "R_MIN": region.r_min,
            "R_MAX": region.r_max,
            "D_MIN": region.d_min,
            "D_MAX": region.d_max,
        }
        files = self.database.region_files(region)
        dvo.write_atomic(files["cpt"], dvo.table_bytes(dvo.CPT_COLUMNS, cpt, bounds, "DVO_AVERAGE"))
        dvo.write_atomic(files["cpm"], dvo.table_bytes(dvo.CPM_COLUMNS, cpm, bounds, "DVO_MEASURE"))
        dvo.write_atomic(files["cps"], dvo.table_bytes(dvo.CPS_COLUMNS, cps, bounds, "DVO_SECFILT"))

    @staticmethod
    def _averages(cpm: Array) -> Array:
        filt = (cpm["PHOTCODE"] - 10000) // 100
        key = cpm["AVE_REF"].astype(np.int64) * 10 + filt
        keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        del key
        sums = np.bincount(inverse, weights=cpm["MAG"])
        sq = np.bincount(inverse, weights=cpm["MAG"].astype(np.float64) ** 2)
        mean = sums / counts
        cps = dvo.empty(dvo.CPS_COLUMNS, len(keys))
        cps["AVE_REF"], cps["PHOTCODE"] = keys // 10, 10000 + 100 * (keys % 10)
        cps["MAG"] = mean
        cps["MAG_ERR"] = np.sqrt(np.clip(sq / counts - mean**2, 0, None))
        cps["NMEAS"] = counts
        return cps

    def _write_skytable(self, with_tables: set[int]) -> None:
        rows = dvo.empty(dvo.SKYTABLE_COLUMNS, len(self.regions))
        for i, r in enumerate(self.regions):
            rows[i] = (
                r.r_min,
                r.r_max,
                r.d_min,
                r.d_max,
                r.index,
                r.depth,
                1 if r.index in with_tables else 0,
                r.name,
            )
        dvo.write_atomic(
            self.database.path("SkyTable.fits"),
            dvo.table_bytes(dvo.SKYTABLE_COLUMNS, rows, extname="SKY_REGION"),
        )


assert len(FILTERS) <= 10  # the cps key packs the filter index into one decimal digit
