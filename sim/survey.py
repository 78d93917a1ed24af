"""The synthetic survey: ``ipp-sim survey --exposures N --chips K --seed S``.

It plays the telescope and the IPP's processing. For each exposure it renders raw chips from
a seeded star field and runs every stage through the reference processor, recording each
run as ``full`` with its products in storage: raw -> chip -> camera (smf, streak masks) ->
warp, then stacks of the warps of each skycell and filter, and diffs of warps against their
stack. Exposures 0, 3, 6 ... carry a streak and are destreaked (magicked = magic_id on their
chip, camera, warp and diff runs, with recovery copies of the chip products; their warps are
made from the destreaked chips); only these ship without --no-magic (seed 001);
exposures 1, 4, 7 ... carry a streak that was never destreaked (magicked 0). Every stage
processes with the values the database holds (the exposure read back from rawExp, skycells
from the skycell table), so the update agent regenerates byte-identical products.
Camera runs and stacks are recorded in addRun as merged into the survey's DVO database, which
is built from the same detections (each stack an image with its own EXTERN_ID, its cmf's
IMAGEID) with PSPS ids in EXT_ID. Memory stays bounded by one exposure: stacks
and diffs read their inputs back from storage.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from shared.db.database import Database, Tx
from shared.db.queries import QueryBook, load_queries
from shared.formats import catalogs
from shared.processing.filerules import rule
from shared.storage.store import Storage
from sim import imaging, processor
from sim.dvobuild import DvoBuilder
from sim.processor import (
    ChipInputs,
    ChipPixels,
    Exposure,
    Streak,
    WarpPixels,
)
from sim.sky import (
    CHIP_DEG,
    FILTERS,
    Skycell,
    StarField,
    chip_names,
    chip_wcs,
    skycells,
    star_field,
)

S = QueryBook(load_queries(Path(__file__).resolve().parent / "sql"))
NIGHT = datetime(2009, 4, 15, 6, 0, 0)


@dataclass(frozen=True)
class SurveyOptions:
    exposures: int
    chips: int
    seed: int
    site: str = "ipp"
    size: int = 64
    stars_per_chip: int = 40
    ra: float = 10.0
    dec: float = 20.0
    label: str = "survey.nightly"
    data_group: str = "survey"
    dist_group: str = "survey"
    dvo_dir: Path | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.exposures < 1:
            raise ValueError("--exposures must be at least 1")
        chip_names(self.chips)
        if not 16 <= self.size <= 4096:
            raise ValueError("--size must be 16..4096 pixels")
        if self.stars_per_chip < 0:
            raise ValueError("--stars-per-chip must be >= 0")

    @property
    def dvodb(self) -> str:
        return f"{self.site}.dvo"


@dataclass
class SurveySummary:
    exposures: list[int] = field(default_factory=list)
    chip_runs: list[int] = field(default_factory=list)
    cam_runs: list[int] = field(default_factory=list)
    warp_runs: list[int] = field(default_factory=list)
    stack_runs: list[int] = field(default_factory=list)
    diff_runs: list[int] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    detections: int = 0
    dvo_dir: str = ""


@dataclass(frozen=True)
class WarpDone:
    warp_id: int
    skycell: Skycell
    filter: str
    path_base: str
    exposure: Exposure
    #: the warp run's magicked (the streak run's magic_id when destreaked, else 0)
    magicked: int = 0


class Survey:
    """Builds one survey into a site's database and storage."""

    def __init__(self, db: Database, storage: Storage, options: SurveyOptions) -> None:
        options.validate()
        self.db, self.storage, self.o = db, storage, options
        self.summary = SurveySummary()
        self.half_width = 4 * 0.055 + 0.03
        self.field: StarField = star_field(
            options.seed, options.ra, options.dec, self.half_width + 0.05, options.stars_per_chip
        )
        self.cells = skycells(options.ra, options.dec, self.half_width, options.size)
        self.classes = chip_names(options.chips)
        self.warps: list[WarpDone] = []
        dvo_dir = options.dvo_dir or Path(".")
        self.dvo = DvoBuilder(dvo_dir, options.ra, options.dec, self.half_width + 0.05)

    # -- helpers ---------------------------------------------------------------------------

    async def _store(self, key: str, data: bytes) -> tuple[int, str]:
        info = await self.storage.create(key, data)
        self.summary.files += 1
        self.summary.bytes += info.bytes
        return info.bytes, info.md5sum

    async def _destreak_run(
        self, stage_name: str, stage_id: int, exp_tag: str, magic_id: int, *, cam_id: int | None = None
    ) -> int:
        """The destreak record (magicDSRun) of one run: what an update restores magicked from."""
        return int(
            await self.db.insert(
                S.insert_magicDSRun,
                magic_id=magic_id,
                stage=stage_name,
                stage_id=stage_id,
                cam_id=cam_id,
                label=self.o.label,
                outroot=self._workdir(),
                recoveryroot=f"{self._workdir()}/{exp_tag}/recovery",
            )
        )

    async def _censored_copies(self, exp_tag: str, cam_id: int, magic_id: int, smf: bytes) -> None:
        """The destreak of a camera run censors its smf in place and leaves two copies: the
        uncensored backup and the recovery of what it censored (magicDSFile, component
        'exposure'), which its cleanup removes (seed 000). The synthetic smf keeps its
        detections; both copies hold its bytes."""
        base = f"{self._workdir()}/{exp_tag}"
        backup, recovery = f"{base}/backup/{exp_tag}.cm.{cam_id}", f"{base}/recovery/{exp_tag}.cm.{cam_id}"
        ds_id = await self._destreak_run("camera", cam_id, exp_tag, magic_id, cam_id=cam_id)
        await self.db.execute(
            S.insert_magicDSFile,
            magic_ds_id=ds_id,
            component="exposure",
            backup_path_base=backup,
            recovery_path_base=recovery,
            streak_frac=0.0,
        )
        for copy in (backup, recovery):
            await self._store(rule("camera", "PSASTRO.OUTPUT").filename(copy), smf)

    async def _store_products(
        self, stage: str, path_base: str, component: str | None, products: dict[str, bytes]
    ) -> None:
        for name, data in sorted(products.items()):
            rule_name, _, part = name.partition(":")  # per chip (class_id) or per input (index)
            r = rule(stage, rule_name)
            key = (
                r.filename(path_base, component, index=int(part))
                if r.per_input
                else r.filename(path_base, part or component)
            )
            await self._store(key, data)

    def _workdir(self) -> str:
        return f"neb://any/{self.o.site}/{NIGHT:%Y%m%d}"

    def _common(self) -> dict[str, Any]:
        return {
            "label": self.o.label,
            "data_group": self.o.data_group,
            "dist_group": self.o.dist_group,
            "dvodb": self.o.dvodb,
            "software_ver": processor.SOFTWARE_VERSION,
            "tess_id": "RINGS.V3",
            "registered": NIGHT.replace(tzinfo=None),
        }

    # -- the whole survey ------------------------------------------------------------------

    async def run(self) -> SurveySummary:
        await self.db.execute(S.upsert_label, label=self.o.label, priority=10)
        await self.db.execute(S.upsert_label, label="second_pass", priority=5)
        for cell in self.cells:
            await self.db.execute(
                S.insert_skycell,
                tess_id=cell.tess_id,
                skycell_id=cell.skycell_id,
                ra=cell.wcs.ra0,
                decl=cell.wcs.dec0,
                size_px=cell.size,
                scale_deg=cell.wcs.scale_deg,
            )
        first = int(await self.db.fetch_val(S.next_exp_id))
        with self._bar(self.o.exposures, "exposures", "exp") as bar:
            for i in range(self.o.exposures):
                await self.exposure(first + i, i)
                bar.update(1)
        await self.stacks_and_diffs()
        written = await asyncio.to_thread(self.dvo.write)
        self.summary.dvo_dir = str(written)
        return self.summary

    def _bar(self, total: int, desc: str, unit: str) -> tqdm[Any]:
        """A progress bar on a terminal (stderr), silent otherwise."""
        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            disable=not (self.o.progress and sys.stderr.isatty()),
        )

    def _exposure(self, exp_id: int, i: int) -> Exposure:
        rng = np.random.default_rng([self.o.seed, 2, i])
        dateobs = NIGHT + timedelta(seconds=45 * i)
        mjd = processor.mjd_of(dateobs)
        filter_name = FILTERS[1 + (i // 2) % 3]  # r r i i z z r r ...
        # rounded as the rawExp columns keep them (FLOAT airmass, DOUBLE ra/decl)
        return Exposure(
            exp_id,
            f"o{int(mjd) - 50000:04d}g{exp_id:04d}o",
            filter_name,
            mjd,
            30.0,
            round(float(1.0 + 0.3 * rng.random()), 3),
            round(self.o.ra + float(rng.uniform(-0.01, 0.01)), 6),
            round(self.o.dec + float(rng.uniform(-0.01, 0.01)), 6),
        )

    def _streaks(self, i: int, e: Exposure) -> list[Streak]:
        if i % 3 == 2:
            return []
        rng = np.random.default_rng([self.o.seed, 3, i])
        return [Streak(e.ra + float(rng.uniform(-0.05, 0.05)), e.dec, float(rng.uniform(0, 180)))]

    # -- one exposure ----------------------------------------------------------------------

    async def exposure(self, exp_id: int, i: int) -> None:
        e = self._exposure(exp_id, i)
        streaks = self._streaks(i, e)
        destreak = bool(streaks) and i % 3 == 0
        exp_tag = f"{e.exp_name}.{exp_id}"
        await self.db.execute(
            S.insert_rawExp,
            exp_id=exp_id,
            exp_name=e.exp_name,
            dateobs=NIGHT + timedelta(seconds=45 * i),
            exp_tag=exp_tag,
            workdir=self._workdir(),
            filter=f"{e.filter}.00000",
            airmass=e.airmass,
            ra=e.ra,
            decl=e.dec,
            exp_time=e.exptime,
            object="synthetic",
            tess_id="RINGS.V3",
        )
        row = await self.db.fetch_one(S.get_rawExp, exp_id=exp_id)
        assert row is not None
        e = Exposure.from_row(row)  # what a regeneration will see
        raws, stars = await self.raw(e, i)
        magic_id = None
        if streaks:
            magic_id = await self.db.insert(
                S.insert_magicRun,
                exp_id=exp_id,
                workdir=self._workdir(),
                label=self.o.label,
                registered=NIGHT,
            )
        chips = await self.chip(e, exp_tag, raws, stars, streaks, magic_id if destreak else None)
        cam_id = await self.camera(e, exp_tag, chips, streaks, magic_id if destreak else None)
        await self.warp(e, exp_tag, cam_id, chips, magic_id if destreak else None)
        self.summary.exposures.append(exp_id)

    async def raw(
        self, e: Exposure, i: int
    ) -> tuple[dict[str, tuple[bytes, int]], dict[str, tuple[Any, Any, Any]]]:
        """Render and store the raw chips; returns (raw bytes, raw_image_id) and the stars
        each chip saw (index, x, y)."""
        raws, stars = {}, {}
        for class_id in self.classes:
            data, seen = await asyncio.to_thread(self._render_raw, e, i, class_id)
            uri = f"neb://any/{self.o.site}/{NIGHT:%Y%m%d}/{e.exp_name}/{e.exp_name}.{class_id}.fits"
            size, md5 = await self._store(uri, data)
            image_id = await self.db.insert(
                S.insert_rawImfile,
                exp_id=e.exp_id,
                exp_name=e.exp_name,
                dateobs=NIGHT,
                class_id=class_id,
                uri=uri,
                filter=f"{e.filter}.00000",
                airmass=e.airmass,
                ra=e.ra,
                decl=e.dec,
                exp_time=e.exptime,
                bytes=size,
                md5sum=md5,
            )
            raws[class_id] = (data, image_id)
            stars[class_id] = seen
        return raws, stars

    def _render_raw(self, e: Exposure, i: int, class_id: str) -> tuple[bytes, tuple[Any, Any, Any]]:
        size = self.o.size
        wcs = chip_wcs(e.ra, e.dec, class_id, size)
        x, y = wcs.to_pixel(self.field.ra, self.field.dec)
        inside = np.nonzero((x >= 1) & (x < size - 2) & (y >= 1) & (y < size - 2))[0]
        mags = self.field.mag[e.filter][inside]
        counts = e.exptime * 10 ** (-0.4 * (mags - e.zpt_obs))
        recipe = processor.RECIPES["chip"]
        stars = imaging.render_stars(size, x[inside], y[inside], counts, recipe["FWHM_PX"][1])
        rng = np.random.default_rng([self.o.seed, 4, i, int(class_id[2:])])
        sky = 200.0
        gain = recipe["GAIN"][1]
        electrons = rng.poisson(np.clip((sky + stars) * gain, 0, None)) / gain
        pixels = recipe["BIAS"][1] + recipe["FLAT"][1] * electrons + rng.normal(0, 5.0, (size, size))
        raw = np.clip(np.round(pixels), 0, 65535).astype(np.uint16)
        header = {
            "EXPNAME": e.exp_name,
            "CHIP": class_id,
            "FILTER": e.filter,
            "EXPTIME": e.exptime,
            "MJD-OBS": e.mjd,
            "AIRMASS": e.airmass,
            **wcs.header(),
        }
        return imaging.fits_image(raw, header), (inside, x[inside], y[inside])

    async def chip(
        self,
        e: Exposure,
        exp_tag: str,
        raws: dict[str, tuple[bytes, int]],
        stars: dict[str, tuple[Any, Any, Any]],
        streaks: list[Streak],
        magic_id: int | None,
    ) -> dict[str, Any]:
        common = self._common()
        chip_id = await self.db.insert(
            S.insert_chipRun, exp_id=e.exp_id, workdir=self._workdir(), magicked=magic_id or 0, **common
        )
        path_base = f"{self._workdir()}/{exp_tag}/{exp_tag}.ch.{chip_id}"
        block = processor.recipe("chip")
        results: dict[str, Any] = {
            "chip_id": chip_id,
            "path_base": path_base,
            "pixels": {},
            "catalogs": [],
            "b1": {},
            "b2": {},
            "wcs": {},
        }
        ds_id = None
        if magic_id is not None:
            ds_id = await self._destreak_run("chip", chip_id, exp_tag, magic_id)
        rows = []
        for class_id in self.classes:
            raw, image_id = raws[class_id]
            wcs = chip_wcs(e.ra, e.dec, class_id, self.o.size)
            inp = ChipInputs(class_id, e, image_id, chip_id, wcs)
            dump = processor.dump_for(
                "chip", block, {"EXP_NAME": e.exp_name, "CLASS_ID": class_id, "CHIP_ID": chip_id}
            )
            res = await asyncio.to_thread(processor.process_chip, raw, block, inp, dump=dump)
            products = res.products
            if ds_id is not None:
                recovery_base = f"{self._workdir()}/{exp_tag}/recovery/{exp_tag}.ch.{chip_id}"
                frac, products = await self._destreak(products, recovery_base, class_id, wcs, streaks)
                await self.db.execute(
                    S.insert_magicDSFile,
                    magic_ds_id=ds_id,
                    component=class_id,
                    backup_path_base=None,
                    recovery_path_base=recovery_base,
                    streak_frac=frac,
                )
            results["pixels"][class_id] = self._pixels(products, wcs)
            await self._store_products("chip", path_base, class_id, products)
            results["catalogs"].append(res.catalog)
            results["b1"][class_id], results["b2"][class_id] = res.b1, res.b2
            results["wcs"][class_id] = wcs
            self.summary.detections += len(res.catalog.table)
            self.dvo.add_chip(
                e, class_id, image_id, chip_id, res.catalog.table, stars[class_id], self.field, wcs
            )
            rows.append(
                dict(
                    chip_id=chip_id,
                    exp_id=e.exp_id,
                    class_id=class_id,
                    uri=rule("chip", "PPIMAGE.CHIP").filename(path_base, class_id),
                    bg=res.stats["BG"],
                    bg_stdev=res.stats["BG_STDEV"],
                    fwhm=res.stats["FWHM"],
                    n_stars=len(res.catalog.table),
                    path_base=path_base,
                    magicked=magic_id or 0,
                    software_ver=processor.SOFTWARE_VERSION,
                )
            )
        fpa = processor.chip_fpa_products(results["b1"], results["b2"])
        await self._store_products("chip", path_base, None, fpa)

        async def record(tx: Tx) -> None:
            for row in rows:
                await tx.execute(S.insert_chipImfile, chip_id=chip_id, class_id=row["class_id"])
                await tx.execute(S.insert_chipProcessedImfile, **row)
            await tx.execute(S.set_chipRun_full, id=chip_id)

        await self.db.transaction(record, name="survey_chip")
        self.summary.chip_runs.append(chip_id)
        return results

    def _pixels(self, products: dict[str, bytes], wcs: Any) -> ChipPixels:
        image, _ = imaging.read_fits_image(products["PPIMAGE.CHIP"])
        mask, _ = imaging.read_fits_image(products["PPIMAGE.CHIP.MASK"])
        var, _ = imaging.read_fits_image(products["PPIMAGE.CHIP.VARIANCE"])
        return ChipPixels(wcs, image, mask, var)

    async def _destreak(
        self, products: dict[str, bytes], recovery_base: str, class_id: str, wcs: Any, streaks: list[Streak]
    ) -> tuple[float, dict[str, bytes]]:
        """Keep the originals as recovery files; blank the streak in the products. The mask
        is the one the camera stage saves for the chip (same recipe width)."""
        width = int(processor.recipe("camera").value("STREAK_WIDTH_PX"))
        streak = processor.streak_mask(wcs, self.o.size, streaks, width)
        for name in processor.DESTREAK_RULES:
            await self._store(rule("chip", name).filename(recovery_base, class_id), products[name])
        return float(np.mean(streak != 0)), processor.destreak(products, streak, wcs.header())

    async def camera(
        self, e: Exposure, exp_tag: str, chips: dict[str, Any], streaks: list[Streak], magic_id: int | None
    ) -> int:
        """The camera run; destreaked with its chips (magicked, REFERENCE 1) when they are."""
        common = self._common()
        cam_id = await self.db.insert(
            S.insert_camRun,
            chip_id=chips["chip_id"],
            workdir=self._workdir(),
            magicked=magic_id or 0,
            **common,
        )
        path_base = f"{self._workdir()}/{exp_tag}/{exp_tag}.cm.{cam_id}"
        block = processor.recipe("camera")
        dump = processor.dump_for("camera", block, {"EXP_NAME": e.exp_name, "CAM_ID": cam_id})
        products = await asyncio.to_thread(
            processor.process_camera,
            chips["catalogs"],
            block,
            e,
            chips["wcs"],
            self.o.size,
            streaks,
            dump=dump,
            b1=chips["b1"],
            b2=chips["b2"],
        )
        await self._store_products("camera", path_base, None, products)
        if magic_id is not None:
            await self._censored_copies(exp_tag, cam_id, magic_id, products["PSASTRO.OUTPUT"])
        n_stars = sum(len(c.table) for c in chips["catalogs"])

        async def record(tx: Tx) -> None:
            await tx.execute(
                S.insert_camProcessedExp,
                cam_id=cam_id,
                uri=rule("camera", "PSASTRO.OUTPUT").filename(path_base),
                bg=200.0,
                zpt_obs=e.zpt_obs,
                fwhm=2.5,
                n_stars=n_stars,
                path_base=path_base,
                software_ver=processor.SOFTWARE_VERSION,
            )
            await tx.execute(S.set_camRun_full, id=cam_id)
            await tx.execute(
                S.insert_addRun,
                cam_id=cam_id,
                workdir=self._workdir(),
                label=self.o.label,
                data_group=self.o.data_group,
                dvodb=self.o.dvodb,
            )

        await self.db.transaction(record, name="survey_camera")
        self.summary.cam_runs.append(cam_id)
        return cam_id

    def _overlaps(self, e: Exposure, cell: Skycell) -> list[str]:
        """The chips whose footprint overlaps the skycell."""
        hits = []
        for class_id in self.classes:
            w = chip_wcs(e.ra, e.dec, class_id, self.o.size)
            cosd = math.cos(math.radians(w.dec0))
            if abs(w.ra0 - cell.wcs.ra0) * cosd < CHIP_DEG and abs(w.dec0 - cell.wcs.dec0) < CHIP_DEG:
                hits.append(class_id)
        return hits

    async def warp(
        self, e: Exposure, exp_tag: str, cam_id: int, chips: dict[str, Any], magic_id: int | None
    ) -> None:
        common = self._common()
        fake = {k: v for k, v in common.items() if k not in ("software_ver", "registered")}
        fake_id = await self.db.insert(S.insert_fakeRun, cam_id=cam_id, workdir=self._workdir(), **fake)
        warp_id = await self.db.insert(
            S.insert_warpRun, fake_id=fake_id, workdir=self._workdir(), magicked=magic_id or 0, **common
        )
        block = processor.recipe("warp")
        maps, rows = [], []
        for cell in self.cells:
            hits = self._overlaps(e, cell)
            if not hits:
                continue
            path_base = f"{self._workdir()}/{exp_tag}/{exp_tag}.wrp.{warp_id}.{cell.skycell_id}"
            dump = processor.dump_for(
                "warp", block, {"EXP_NAME": e.exp_name, "SKYCELL_ID": cell.skycell_id, "WARP_ID": warp_id}
            )
            products = await asyncio.to_thread(
                processor.process_warp, {c: chips["pixels"][c] for c in hits}, cell, block, e, dump=dump
            )
            await self._store_products("warp", path_base, None, products)
            maps += [
                dict(warp_id=warp_id, skycell_id=cell.skycell_id, tess_id=cell.tess_id, class_id=c)
                for c in hits
            ]
            mask_px, _ = imaging.read_fits_image(products["PSWARP.OUTPUT.MASK"])
            rows.append(
                dict(
                    warp_id=warp_id,
                    skycell_id=cell.skycell_id,
                    tess_id=cell.tess_id,
                    uri=rule("warp", "PSWARP.OUTPUT").filename(path_base),
                    path_base=path_base,
                    bg=200.0,
                    bg_stdev=1.0,
                    good_frac=float(np.mean(mask_px == 0)),
                    magicked=magic_id or 0,
                    software_ver=processor.SOFTWARE_VERSION,
                )
            )
            self.warps.append(WarpDone(warp_id, cell, e.filter, path_base, e, magic_id or 0))

        async def record(tx: Tx) -> None:
            for m in maps:
                await tx.execute(S.insert_warpSkyCellMap, **m)
            for row in rows:
                await tx.execute(S.insert_warpImfile, warp_id=warp_id, skycell_id=row["skycell_id"])
                await tx.execute(S.insert_warpSkyfile, **row)
            await tx.execute(S.set_warpRun_full, id=warp_id)

        await self.db.transaction(record, name="survey_warp")
        self.summary.warp_runs.append(warp_id)

    # -- stacks and diffs ------------------------------------------------------------------

    async def _warp_pixels(
        self, stage: str, prefix: str, path_base: str, e_time: float, zpt: float, mjd: float
    ) -> WarpPixels:
        async def read(name: str) -> Any:
            data = await self.storage.read_bytes(rule(stage, name).filename(path_base))
            return imaging.read_fits_image(data)[0]

        return WarpPixels(
            await read(prefix),
            await read(f"{prefix}.MASK"),
            await read(f"{prefix}.VARIANCE"),
            e_time,
            zpt,
            mjd,
        )

    async def stacks_and_diffs(self) -> None:
        groups: dict[tuple[str, str], list[WarpDone]] = defaultdict(list)
        for w in self.warps:
            groups[(w.skycell.skycell_id, w.filter)].append(w)
        stackable = {k: v for k, v in sorted(groups.items()) if len(v) >= 2}
        stacks: dict[tuple[str, str], tuple[int, str]] = {}
        with self._bar(len(stackable), "stacks", "stack") as bar:
            for (skycell_id, filter_name), warps in stackable.items():
                stacks[(skycell_id, filter_name)] = await self.stack(warps, filter_name)
                bar.update(1)
        by_run: dict[int, list[WarpDone]] = defaultdict(list)
        for w in self.warps:
            if (w.skycell.skycell_id, w.filter) in stacks:
                by_run[w.warp_id].append(w)
        with self._bar(len(by_run), "diffs", "run") as bar:
            for _warp_id, warps in sorted(by_run.items()):
                await self.diff(warps, stacks)
                bar.update(1)

    async def stack(self, warps: list[WarpDone], filter_name: str) -> tuple[int, str]:
        cell = warps[0].skycell
        common = self._common()
        stack_id = await self.db.insert(
            S.insert_stackRun,
            workdir=self._workdir(),
            skycell_id=cell.skycell_id,
            filter=f"{filter_name}.00000",
            **{k: v for k, v in common.items() if k != "tess_id"},
            tess_id=cell.tess_id,
        )
        path_base = f"{self._workdir()}/stack/{cell.skycell_id}/{cell.skycell_id}.stk.{stack_id}"
        pixels = [
            await self._warp_pixels(
                "warp", "PSWARP.OUTPUT", w.path_base, w.exposure.exptime, w.exposure.zpt_obs, w.exposure.mjd
            )
            for w in warps
        ]
        block = processor.recipe("stack")
        dump = processor.dump_for(
            "stack", block, {"SKYCELL_ID": cell.skycell_id, "STACK_ID": stack_id, "FILTER": filter_name}
        )
        products = await asyncio.to_thread(
            processor.process_stack, pixels, cell, block, filter_name, dump=dump, stack_id=stack_id
        )
        await self._store_products("stack", path_base, cell.skycell_id, products)
        mjd = float(np.mean([w.exposure.mjd for w in warps]))
        header, sources = catalogs.read_cmf(products["PPSTACK.SOURCES"])
        self.dvo.add_stack(stack_id, filter_name, mjd, float(header["EXPTIME"]), sources, cell, self.field)

        async def record(tx: Tx) -> None:
            for w in warps:
                await tx.execute(S.insert_stackInputSkyfile, stack_id=stack_id, warp_id=w.warp_id)
            await tx.execute(
                S.insert_stackSumSkyfile,
                stack_id=stack_id,
                uri=rule("stack", "PPSTACK.OUTPUT").filename(path_base),
                path_base=path_base,
                bg=200.0,
                bg_stdev=1.0,
                sources=0,
                good_frac=1.0,
                mjd_obs=mjd,
                software_ver=processor.SOFTWARE_VERSION,
            )
            await tx.execute(S.set_stackRun_full, id=stack_id)
            await tx.execute(
                S.insert_addRun_stack,
                stack_id=stack_id,
                workdir=self._workdir(),
                label=self.o.label,
                data_group=self.o.data_group,
                dvodb=self.o.dvodb,
            )

        await self.db.transaction(record, name="survey_stack")
        self.summary.stack_runs.append(stack_id)
        return stack_id, path_base

    async def diff(self, warps: list[WarpDone], stacks: dict[tuple[str, str], tuple[int, str]]) -> None:
        e = warps[0].exposure
        exp_tag = f"{e.exp_name}.{e.exp_id}"
        common = self._common()
        # a diff of destreaked warps is destreaked with them (all its warps are one exposure's)
        magicked = min(w.magicked for w in warps)
        diff_id = await self.db.insert(
            S.insert_diffRun, workdir=self._workdir(), magicked=max(magicked, 0), **common
        )
        if magicked > 0:  # its destreak record: what an update restores magicked from
            await self._destreak_run("diff", diff_id, exp_tag, magicked)
        block = processor.recipe("diff")
        inputs, rows = [], []
        for w in warps:
            stack_id, stack_base = stacks[(w.skycell.skycell_id, w.filter)]
            path_base = f"{self._workdir()}/{exp_tag}/{exp_tag}.dif.{diff_id}.{w.skycell.skycell_id}"
            warp_px = await self._warp_pixels(
                "warp", "PSWARP.OUTPUT", w.path_base, e.exptime, e.zpt_obs, e.mjd
            )
            stack_px = await self._warp_pixels(
                "stack", "PPSTACK.OUTPUT", stack_base, e.exptime, e.zpt_obs, e.mjd
            )
            dump = processor.dump_for(
                "diff",
                block,
                {
                    "SKYCELL_ID": w.skycell.skycell_id,
                    "DIFF_ID": diff_id,
                    "WARP_ID": w.warp_id,
                    "STACK_ID": stack_id,
                },
            )
            products = await asyncio.to_thread(
                processor.process_diff, warp_px, stack_px, w.skycell, block, dump=dump
            )
            await self._store_products("diff", path_base, None, products)
            inputs.append(
                dict(
                    diff_id=diff_id,
                    skycell_id=w.skycell.skycell_id,
                    warp_id=w.warp_id,
                    stack_id=stack_id,
                    tess_id=w.skycell.tess_id,
                )
            )
            rows.append(
                dict(
                    diff_id=diff_id,
                    skycell_id=w.skycell.skycell_id,
                    path_base=path_base,
                    bg=0.0,
                    bg_stdev=1.0,
                    sources=0,
                    good_frac=1.0,
                    software_ver=processor.SOFTWARE_VERSION,
                )
            )

        async def record(tx: Tx) -> None:
            for i in inputs:
                await tx.execute(S.insert_diffInputSkyfile, **i)
            for row in rows:
                await tx.execute(S.insert_diffSkyfile, **row)
            await tx.execute(S.set_diffRun_full, id=diff_id)

        await self.db.transaction(record, name="survey_diff")
        self.summary.diff_runs.append(diff_id)


async def ensure_volumes(storage: Storage, var_dir: Path, site: str) -> None:
    """Two storage volumes for the site under var/ unless it has some already."""
    if await storage.volumes():
        return
    for n in range(2):
        await storage.add_volume(f"{site}.{n}", var_dir / "storage" / site / f"vol{n}")
