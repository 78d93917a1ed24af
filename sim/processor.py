"""The reference stage processor: regenerates any stage's products from inputs and recipes.

Every stage function is deterministic: the same input bytes and recipe give byte-identical
products (no clocks, no randomness, no host names in any file). Each returns a mapping from
file rule name (``shared.processing.filerules``) to the file's bytes; the caller stores them under
``rule.filename(path_base, component)``. A name ``RULE:part`` is one of several files of a
rule: ``part`` is the chip (camera streak masks) or the input index (stack kernels).

Recipes live in the stage's config dump (an mdc file with a ``RECIPE`` block and an
``INPUTS`` block); :func:`read_recipe` gets them back, which is how an update regenerates a
run "with the run's recipes" (REFERENCE 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from shared.core.errors import MdcError
from shared.formats import catalogs, mdc
from shared.formats.catalogs import ChipCatalog
from shared.formats.mdc import Block, Scalar
from sim import imaging
from sim.sky import ZERO_POINTS, Skycell, Wcs

Array = np.ndarray[Any, Any]
SOFTWARE_VERSION = "refproc-1.0"

#: Default recipes per stage (the "current recipes").
RECIPES: dict[str, dict[str, tuple[str, Any]]] = {
    "chip": {
        "BIAS": ("F32", 1000.0),
        "FLAT": ("F32", 1.0),
        "GAIN": ("F32", 1.2),
        "READNOISE": ("F32", 5.0),
        "SATURATION": ("F32", 60000.0),
        "DETECT_NSIGMA": ("F32", 5.0),
        "APERTURE": ("S32", 2),
        "BIN1": ("S32", 4),
        "BIN2": ("S32", 16),
        "BACKMDL_BOX": ("S32", 16),
        "FWHM_PX": ("F32", 2.5),
    },
    "camera": {"ASTROM_ORDER": ("S32", 1), "STREAK_WIDTH_PX": ("S32", 2)},
    "warp": {
        "DETECT_NSIGMA": ("F32", 5.0),
        "APERTURE": ("S32", 2),
        "BACKMDL_BOX": ("S32", 16),
        "BIN1": ("S32", 4),
        "BIN2": ("S32", 16),
    },
    "stack": {
        "DETECT_NSIGMA": ("F32", 5.0),
        "APERTURE": ("S32", 2),
        "BACKMDL_BOX": ("S32", 16),
        "BIN1": ("S32", 4),
        "BIN2": ("S32", 16),
    },
    "diff": {
        "DETECT_NSIGMA": ("F32", 5.0),
        "APERTURE": ("S32", 2),
        "BACKMDL_BOX": ("S32", 16),
        "BIN1": ("S32", 4),
        "BIN2": ("S32", 16),
    },
}
CONFIG_RULES = {
    "chip": "PPIMAGE.CONFIG",
    "camera": "PSASTRO.CONFIG",
    "warp": "PSWARP.CONFIG",
    "stack": "PPSTACK.CONFIG",
    "diff": "PPSUB.CONFIG",
}


# -- recipes and config dumps ------------------------------------------------------------


def recipe(stage: str, **overrides: Any) -> Block:
    """The stage's current recipe, with optional overrides."""
    block = Block()
    for name, (kind, value) in RECIPES[stage].items():
        block.add(name, Scalar(kind, overrides.get(name, value)))
    block.add("SOFTWARE_VER", Scalar("STR", SOFTWARE_VERSION))
    return block


def config_dump(recipe_block: Block, inputs: dict[str, tuple[str, Any]]) -> bytes:
    """The config dump: the recipe used and what it was applied to."""
    doc = Block()
    doc.add("RECIPE", recipe_block)
    block = Block()
    for name, (kind, value) in inputs.items():
        block.add(name, Scalar(kind, value))
    doc.add("INPUTS", block)
    return mdc.dumps(doc).encode()


#: What each stage's config dump records in its INPUTS block (name, mdc type).
DUMP_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "chip": (("EXP_NAME", "STR"), ("CLASS_ID", "STR"), ("CHIP_ID", "S64")),
    "camera": (("EXP_NAME", "STR"), ("CAM_ID", "S64")),
    "warp": (("EXP_NAME", "STR"), ("SKYCELL_ID", "STR"), ("WARP_ID", "S64")),
    "stack": (("SKYCELL_ID", "STR"), ("STACK_ID", "S64"), ("FILTER", "STR")),
    "diff": (("SKYCELL_ID", "STR"), ("DIFF_ID", "S64"), ("WARP_ID", "S64"), ("STACK_ID", "S64")),
}


def dump_for(stage: str, recipe_block: Block, values: Mapping[str, Any]) -> bytes:
    """The config dump of one component of ``stage`` processed with ``recipe_block``."""
    try:
        return config_dump(recipe_block, {name: (kind, values[name]) for name, kind in DUMP_INPUTS[stage]})
    except KeyError as exc:
        raise MdcError(f"{stage} config dump: no value for {exc.args[0]}") from None


def read_recipe(dump: bytes, source: str = "config dump") -> Block:
    """The RECIPE block of a config dump (MdcError if it is not one)."""
    doc = mdc.loads(dump.decode("utf-8"), source)
    block = doc.get("RECIPE")
    if not isinstance(block, Block):
        raise MdcError(f"{source}: no RECIPE block")
    return block


def _r(block: Block, name: str) -> Any:
    value = block.value(name)
    if value is None:
        raise MdcError(f"recipe has no {name}")
    return value


# -- exposures and detections ------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    exp_id: int
    exp_name: str
    filter: str
    mjd: float
    exptime: float
    airmass: float
    ra: float
    dec: float

    @property
    def zpt_obs(self) -> float:
        return ZERO_POINTS[self.filter] - 0.1 * (self.airmass - 1.0)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Exposure:
        """The exposure as its rawExp row records it (exp_id, exp_name, filter, dateobs,
        exp_time, airmass, ra, decl): what a regeneration processes with, so the survey
        processes with exactly these values too."""
        when = row["dateobs"]
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        return cls(
            int(row["exp_id"]),
            str(row["exp_name"]),
            str(row["filter"]).split(".")[0],
            mjd_of(when),
            float(row["exp_time"]),
            float(row["airmass"]),
            float(row["ra"]),
            float(row["decl"]),
        )


def mjd_of(when: datetime) -> float:
    """Modified Julian date of a (naive UTC) datetime."""
    return 40587 + (when - datetime(1970, 1, 1)).total_seconds() / 86400


#: Stacks' image EXTERN_IDs (the stack cmf's IMAGEID, Images.dat EXTERN_ID): above every raw
#: chip's, below 2^28 so that the stack detection id (35 << 56) + (EXTERN_ID << 28) + detID fits.
STACK_EXTERN_BASE = 1 << 27
#: The "ccd" of a stack's photcode (10000 + 100*filter + 99).
STACK_CCD = 99


def stack_extern_id(stack_id: int) -> int:
    return STACK_EXTERN_BASE + stack_id


def photcode(filter_name: str, class_id: str) -> int:
    """Numeric photcode: 10000 + 100*filter + ccd, so that photcode % 100 is the ccd."""
    from sim.sky import FILTERS

    return 10000 + 100 * FILTERS.index(filter_name) + int(class_id[2:4])


@dataclass
class Detections:
    table: Array
    stats: dict[str, float] = field(default_factory=dict)


def detect(
    image: Array,
    variance: Array,
    mask: Array,
    wcs: Wcs,
    block: Block,
    *,
    zpt: float,
    zpt_err: float,
    exptime: float,
    fwhm_px: float,
) -> Detections:
    """Find and measure sources: PS1_V5 rows numbered 0..N-1 in (y, x) order."""
    box = int(_r(block, "BACKMDL_BOX"))
    clean = np.nan_to_num(image.astype(np.float64))
    bg_model = imaging.background_model(clean, box)
    bg = imaging.expand_model(bg_model, clean.shape)
    signal = clean - bg
    noise = np.sqrt(np.clip(np.nan_to_num(variance), 1e-6, None))
    ys, xs = imaging.find_peaks(signal, float(_r(block, "DETECT_NSIGMA")) * noise)
    radius = int(_r(block, "APERTURE"))
    flux, npix = imaging.box_sums(signal, ys, xs, radius)
    var_sum, _ = imaging.box_sums(np.nan_to_num(variance), ys, xs, radius)
    good = flux > 0
    ys, xs, flux, npix, var_sum = ys[good], xs[good], flux[good], npix[good], var_sum[good]
    mom = imaging.moments(signal, ys, xs)
    n = len(ys)
    t = catalogs.empty_table(n)
    flux_sig = np.sqrt(np.clip(var_sum, 1e-6, None))
    inst = -2.5 * np.log10(flux)
    inst_sig = 1.0857 * flux_sig / flux
    peak = signal[ys, xs]
    ra, dec = wcs.to_sky(mom["x"], mom["y"])
    t["IPP_IDET"] = np.arange(n, dtype=np.uint32)
    t["X_PSF"], t["Y_PSF"] = mom["x"], mom["y"]
    t["X_PSF_SIG"] = t["Y_PSF_SIG"] = fwhm_px / np.sqrt(np.clip(flux / flux_sig, 1, None))
    t["PLTSCALE"] = wcs.scale_deg * 3600.0
    t["PSF_INST_MAG"], t["PSF_INST_MAG_SIG"] = inst, inst_sig
    t["PSF_INST_FLUX"], t["PSF_INST_FLUX_SIG"] = flux, flux_sig
    t["AP_MAG"] = t["AP_MAG_RAW"] = inst
    t["AP_MAG_RADIUS"] = float(radius)
    t["AP_FLUX"], t["AP_FLUX_SIG"], t["AP_NPIX"] = flux, flux_sig, npix
    t["CAL_PSF_MAG"] = inst + zpt + 2.5 * math.log10(exptime)
    t["CAL_PSF_MAG_SIG"] = zpt_err
    t["RA_PSF"], t["DEC_PSF"] = ra, dec
    t["PEAK_FLUX_AS_MAG"] = -2.5 * np.log10(np.clip(peak, 1e-6, None))
    t["SKY"], t["SKY_SIGMA"] = bg[ys, xs], noise[ys, xs]
    t["PSF_CHISQ"] = 1.0
    t["PSF_MAJOR"] = t["PSF_MINOR"] = fwhm_px / 2.3548
    t["PSF_FWHM_MAJ"] = t["PSF_FWHM_MIN"] = fwhm_px
    t["PSF_QF"] = t["PSF_QF_PERFECT"] = np.clip(1.0 - mask[ys, xs].astype(bool), 0, 1)
    t["PSF_NDOF"], t["PSF_NPIX"] = npix - 3, npix
    t["MOMENTS_XX"], t["MOMENTS_XY"], t["MOMENTS_YY"] = mom["xx"], mom["xy"], mom["yy"]
    t["MOMENTS_R1"] = np.sqrt(np.clip(mom["xx"] + mom["yy"], 0, None))
    t["MOMENTS_RH"] = t["MOMENTS_R1"] * 0.8
    t["KRON_FLUX"], t["KRON_FLUX_ERR"] = flux, flux_sig
    t["KRON_FLUX_INNER"], t["KRON_FLUX_OUTER"] = flux * 0.9, flux * 1.05
    t["SKY_LIMIT_RAD"] = float(radius + 2)
    flags = np.full(n, catalogs.FLAGS["PSFMODEL"] | catalogs.FLAGS["FITTED"], dtype=np.uint32)
    flags[mask[ys, xs] != 0] |= catalogs.FLAGS["SATURATED"]
    t["FLAGS"], t["N_FRAMES"] = flags, 1
    stats = {
        "BG": float(np.median(bg)),
        "BG_STDEV": float(np.std(bg_model)),
        "N_STARS": float(n),
        "FWHM": fwhm_px,
        "MSKY_MN": float(np.mean(bg)),
        "MSKY_SIG": float(np.median(noise)),
    }
    return Detections(t, stats)


def _stats(values: dict[str, float]) -> bytes:
    block = Block()
    for name, value in values.items():
        block.add(name, Scalar("F64", float(value)))
    return mdc.dumps(block).encode()


def _log(title: str, lines: list[str]) -> bytes:
    return ("\n".join([title, *lines]) + "\n").encode()


def _detection_log(table: Array) -> list[str]:
    return [
        f"  det {int(r['IPP_IDET'])} x={r['X_PSF']:.2f} y={r['Y_PSF']:.2f} "
        f"flux={r['PSF_INST_FLUX']:.1f} mag={r['PSF_INST_MAG']:.3f}"
        for r in table
    ]


def _psf_file(fwhm_px: float) -> bytes:
    sigma = fwhm_px / 2.3548
    y, x = np.mgrid[-7:8, -7:8]
    model = np.exp(-(x**2 + y**2) / (2 * sigma**2)).astype(np.float32)
    return imaging.fits_image(
        model / model.sum(), {"PSFMODEL": "PS_MODEL_GAUSS", "FWHM_MAJ": fwhm_px, "FWHM_MIN": fwhm_px}
    )


# -- chip ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipInputs:
    class_id: str
    exposure: Exposure
    image_id: int
    chip_id: int
    wcs: Wcs


@dataclass
class ChipResult:
    products: dict[str, bytes]
    catalog: ChipCatalog
    stats: dict[str, float]
    b1: Array
    b2: Array


def chip_header(inp: ChipInputs, stats: dict[str, float], fwhm_px: float, n_stars: int) -> dict[str, Any]:
    """The chip header keywords the loader needs (REFERENCE 8)."""
    e = inp.exposure
    return {
        "IMAGEID": inp.image_id,
        "SOURCEID": inp.chip_id,
        "EXP_NAME": e.exp_name,
        "CHIP": inp.class_id,
        "MJD-OBS": e.mjd,
        "EXPTIME": e.exptime,
        "AIRMASS": e.airmass,
        "PHOTCODE": f"GPC1.{e.filter}.{inp.class_id}",
        "ZPT_OBS": e.zpt_obs,
        "ZPT_ERR": 0.02,
        "FWHM_MAJ": fwhm_px,
        "FWHM_MIN": fwhm_px,
        "MSKY_MN": stats["MSKY_MN"],
        "MSKY_SIG": stats["MSKY_SIG"],
        "APMIFIT": 0.0,
        "HIERARCH DETEFF.MAGREF": 21.5,
        "FSATUR": 0.0,
        "NASTRO": n_stars,
        "CERROR": 0.05,
        **inp.wcs.header(),
    }


def process_chip(
    raw: bytes, block: Block, inp: ChipInputs, *, dump: bytes, run_photometry: bool = True
) -> ChipResult:
    """raw -> chip: detrend, mask, variance, binned images, background model, detections.

    ``run_photometry=False`` skips the psf (REFERENCE 3: a chip update re-runs photometry only
    when the psf is missing); the catalog is still computed for the caller to use or drop.
    """
    pixels, _ = imaging.read_fits_image(raw)
    pixels = pixels.astype(np.float64)
    bias, flat, gain = float(_r(block, "BIAS")), float(_r(block, "FLAT")), float(_r(block, "GAIN"))
    readnoise, fwhm = float(_r(block, "READNOISE")), float(_r(block, "FWHM_PX"))
    image = ((pixels - bias) / flat).astype(np.float32)
    mask = (pixels >= float(_r(block, "SATURATION"))).astype(np.uint16)
    variance = (np.clip(image, 0, None) / gain + (readnoise / gain) ** 2 / flat**2).astype(np.float32)
    e = inp.exposure
    found = detect(
        image, variance, mask, inp.wcs, block, zpt=e.zpt_obs, zpt_err=0.02, exptime=e.exptime, fwhm_px=fwhm
    )
    header = chip_header(inp, found.stats, fwhm, len(found.table))
    b1 = imaging.bin_image(image, int(_r(block, "BIN1")))
    b2 = imaging.bin_image(image, int(_r(block, "BIN2")))
    bg_model = imaging.background_model(np.nan_to_num(image), int(_r(block, "BACKMDL_BOX")))
    wcs_hdr = inp.wcs.header()
    products = {
        "PPIMAGE.CHIP": imaging.fits_image(image, wcs_hdr),
        "PPIMAGE.CHIP.MASK": imaging.fits_image(mask, wcs_hdr),
        "PPIMAGE.CHIP.VARIANCE": imaging.fits_image(variance, wcs_hdr),
        "PPIMAGE.PATTERN": imaging.fits_image(np.median(image, axis=1).astype(np.float32)),
        "TRACE.IMFILE": b"",
        "PSPHOT.OUTPUT": catalogs.cmf_bytes(header, found.table),
        "PPIMAGE.BIN1": imaging.fits_image(b1),
        "PPIMAGE.BIN2": imaging.fits_image(b2),
        "PPIMAGE.STATS": _stats(found.stats),
        "PPIMAGE.CONFIG": dump,
        "PSPHOT.BACKMDL": imaging.fits_image(bg_model),
        "LOG.IMFILE": _log(
            f"ppImage {e.exp_name} {inp.class_id} chip_id {inp.chip_id}: "
            f"bias {bias} flat {flat} detections {len(found.table)}",
            _detection_log(found.table),
        ),
    }
    if run_photometry:
        products["PSPHOT.PSF.SAVE"] = _psf_file(fwhm)
    return ChipResult(products, ChipCatalog(inp.class_id, header, found.table), found.stats, b1, b2)


#: The chip products a destreak blanks (and keeps as recovery copies).
DESTREAK_RULES = ("PPIMAGE.CHIP", "PPIMAGE.CHIP.MASK", "PPIMAGE.CHIP.VARIANCE")
#: The mask bit a destreak sets on streak pixels.
STREAK_BIT = 0x100


def destreak(
    products: dict[str, bytes], streak: Array, header: dict[str, Any], names: tuple[str, ...] = DESTREAK_RULES
) -> dict[str, bytes]:
    """Blank the streak in a chip's image and variance and flag it in its mask.

    ``streak`` is the camera stage's streak mask for the chip (non-zero on the streak).
    Returns the destreaked products; the originals are what a destreak keeps as recovery
    files. Deterministic, so a regenerated chip destreaks to the same bytes.
    """
    out = dict(products)
    on = np.asarray(streak) != 0
    for name in names:
        data, _ = imaging.read_fits_image(products[name])
        if name.endswith("MASK"):
            data = np.where(on, data | STREAK_BIT, data).astype(data.dtype)
        else:
            data = np.where(on, 0, data).astype(data.dtype)
        out[name] = imaging.fits_image(data, header)
    return out


def mosaic(tiles: dict[str, Array]) -> Array:
    """Binned chip images laid out on the focal plane by OTA position."""
    size = next(iter(tiles.values())).shape[0]
    out = np.zeros((8 * size, 8 * size), dtype=np.float32)
    for class_id, tile in tiles.items():
        col, row = int(class_id[2]), int(class_id[3])
        out[row * size : (row + 1) * size, col * size : (col + 1) * size] = tile[:size, :size]
    return out


def chip_fpa_products(b1: dict[str, Array], b2: dict[str, Array]) -> dict[str, bytes]:
    """The run-level products of the chip stage: binned focal-plane mosaics and jpegs."""
    m1, m2 = mosaic(b1), mosaic(b2)
    return {
        "PPIMAGE.OUTPUT.FPA1": imaging.fits_image(m1),
        "PPIMAGE.OUTPUT.FPA2": imaging.fits_image(m2),
        "PPIMAGE.JPEG1": imaging.jpeg(m1),
        "PPIMAGE.JPEG2": imaging.jpeg(m2),
    }


# -- camera --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Streak:
    """A straight streak across the focal plane, in sky coordinates."""

    ra: float
    dec: float
    angle_deg: float


def streak_mask(wcs: Wcs, size: int, streaks: list[Streak], width_px: int) -> Array:
    mask = np.zeros((size, size), dtype=np.uint16)
    y, x = np.mgrid[0:size, 0:size]
    for s in streaks:
        sx, sy = wcs.to_pixel(np.array([s.ra]), np.array([s.dec]))
        a = math.radians(s.angle_deg)
        distance = np.abs((x - sx[0]) * math.sin(a) - (y - sy[0]) * math.cos(a))
        mask[distance <= width_px] = 1
    return mask


def process_camera(
    chips: list[ChipCatalog],
    block: Block,
    exposure: Exposure,
    wcs: dict[str, Wcs],
    size: int,
    streaks: list[Streak],
    *,
    dump: bytes,
    b1: dict[str, Array],
    b2: dict[str, Array],
) -> dict[str, bytes]:
    """chip -> camera: the smf, a streak mask per chip, stats, jpegs."""
    e = exposure
    header = {
        "FILTERID": f"{e.filter}.00000",
        "MJD-OBS": e.mjd,
        "EXPTIME": e.exptime,
        "AIRMASS": e.airmass,
        "RA": e.ra,
        "DEC": e.dec,
        "EXP_NAME": e.exp_name,
        "ZPT_OBS": e.zpt_obs,
        "NCHIPS": len(chips),
    }
    ordered = sorted(chips, key=lambda c: c.class_id)
    width = int(_r(block, "STREAK_WIDTH_PX"))
    products = {
        "PSASTRO.OUTPUT": catalogs.smf_bytes(header, ordered),
        "PSASTRO.CONFIG": dump,
        "PSASTRO.STATS": _stats(
            {
                "N_CHIPS": len(chips),
                "N_STARS": sum(len(c.table) for c in chips),
                "ZPT_OBS": e.zpt_obs,
                "N_STREAKS": len(streaks),
            }
        ),
        "PPIMAGE.JPEG1": imaging.jpeg(mosaic(b1)),
        "PPIMAGE.JPEG2": imaging.jpeg(mosaic(b2)),
        "LOG.EXP": _log(
            f"psastro {e.exp_name}: {len(chips)} chips, {len(streaks)} streaks",
            [f"  {c.class_id}: {len(c.table)} detections" for c in ordered],
        ),
    }
    for class_id, chip_wcs_ in sorted(wcs.items()):
        products[f"PSASTRO.OUTPUT.MASK:{class_id}"] = imaging.fits_image(
            streak_mask(chip_wcs_, size, streaks, width), chip_wcs_.header()
        )
    return products


# -- warp, stack, diff ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChipPixels:
    wcs: Wcs
    image: Array
    mask: Array
    variance: Array


def _skycell_grid(cell: Skycell) -> tuple[Array, Array]:
    y, x = np.mgrid[0 : cell.size, 0 : cell.size]
    return cell.wcs.to_sky(x.astype(np.float64), y.astype(np.float64))


def _sky_products(
    prefix: str,
    image: Array,
    mask: Array,
    variance: Array,
    block: Block,
    cell: Skycell,
    *,
    zpt: float,
    exptime: float,
    fwhm: float,
    header: dict[str, Any],
) -> tuple[dict[str, bytes], Detections]:
    found = detect(
        image, variance, mask, cell.wcs, block, zpt=zpt, zpt_err=0.02, exptime=exptime, fwhm_px=fwhm
    )
    hdr = {**cell.wcs.header(), "SKYCELL": cell.skycell_id, "TESS_ID": cell.tess_id}
    return {
        f"{prefix}": imaging.fits_image(np.nan_to_num(image).astype(np.float32), hdr),
        f"{prefix}.MASK": imaging.fits_image(mask, hdr),
        f"{prefix}.VARIANCE": imaging.fits_image(np.nan_to_num(variance).astype(np.float32), hdr),
        "_SOURCES": catalogs.cmf_bytes({**header, **hdr}, found.table),
    }, found


def process_warp(
    chips: dict[str, ChipPixels],
    cell: Skycell,
    block: Block,
    exposure: Exposure,
    *,
    dump: bytes,
    fwhm: float = 2.5,
) -> dict[str, bytes]:
    """camera -> warp: resample the chips onto one skycell and measure it."""
    ra, dec = _skycell_grid(cell)
    image = np.full(ra.shape, np.nan)
    mask = np.full(ra.shape, 1, dtype=np.uint16)
    variance = np.full(ra.shape, np.nan)
    for class_id in sorted(chips):
        c = chips[class_id]
        sx, sy = c.wcs.to_pixel(ra, dec)
        values = imaging.resample_nearest(c.image, sx, sy)
        hit = np.isfinite(values) & ~np.isfinite(image)
        image[hit] = values[hit]
        mask[hit] = imaging.resample_nearest(c.mask.astype(np.float64), sx, sy)[hit]
        variance[hit] = imaging.resample_nearest(c.variance, sx, sy)[hit]
    e = exposure
    header = {
        "EXP_NAME": e.exp_name,
        "MJD-OBS": e.mjd,
        "EXPTIME": e.exptime,
        "ZPT_OBS": e.zpt_obs,
        "FPA.FILTER": e.filter,
    }
    products, found = _sky_products(
        "PSWARP.OUTPUT",
        image,
        mask,
        variance,
        block,
        cell,
        zpt=e.zpt_obs,
        exptime=e.exptime,
        fwhm=fwhm,
        header=header,
    )
    products["PSWARP.OUTPUT.SOURCES"] = products.pop("_SOURCES")
    clean = np.nan_to_num(image)
    bg = imaging.expand_model(imaging.background_model(clean, int(_r(block, "BACKMDL_BOX"))), clean.shape)
    products.update(
        {
            "SKYCELL.TEMPLATE": imaging.fits_image(
                None, {**cell.wcs.header(), "SKYCELL": cell.skycell_id, "TESS_ID": cell.tess_id}
            ),
            "PSPHOT.RESID": imaging.fits_image((clean - bg).astype(np.float32)),
            "PSPHOT.PSF.SKY.SAVE": _psf_file(fwhm),
            "PSWARP.BIN1": imaging.fits_image(imaging.bin_image(clean, int(_r(block, "BIN1")))),
            "PSWARP.BIN2": imaging.fits_image(imaging.bin_image(clean, int(_r(block, "BIN2")))),
            "SKYCELL.STATS": _stats({**found.stats, "GOOD_FRAC": float(np.mean(mask == 0))}),
            "PSWARP.CONFIG": dump,
            "LOG.EXP": _log(
                f"pswarp {e.exp_name} {cell.skycell_id}: {len(chips)} chips, {len(found.table)} detections",
                _detection_log(found.table),
            ),
        }
    )
    return products


@dataclass(frozen=True)
class WarpPixels:
    image: Array
    mask: Array
    variance: Array
    exptime: float
    zpt: float
    mjd: float


def process_stack(
    warps: list[WarpPixels],
    cell: Skycell,
    block: Block,
    filter_name: str,
    *,
    dump: bytes,
    stack_id: int,
    fwhm: float = 2.5,
) -> dict[str, bytes]:
    """warps -> stack: the mean of the warps of one skycell in one filter."""
    images = np.stack([np.where(w.mask == 0, w.image, np.nan) for w in warps])
    count = np.sum(np.isfinite(images), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(images, axis=0) / np.maximum(count, 1), np.nan)
        var = np.nansum(np.stack([w.variance for w in warps]), axis=0) / np.maximum(count, 1) ** 2
    exptime = sum(w.exptime for w in warps)
    exp_map = np.sum([np.where(w.mask == 0, w.exptime, 0.0) for w in warps], axis=0)
    mask = (count == 0).astype(np.uint16)
    zpt = float(np.mean([w.zpt for w in warps]))
    mjd = float(np.mean([w.mjd for w in warps]))
    header = {
        "HIERARCH FPA.ZP": zpt,
        "HIERARCH FPA.FILTER": filter_name,
        "MJD-OBS": mjd,
        "EXPTIME": exptime,
        "NINPUTS": len(warps),
        "STACK_ID": stack_id,
        "IMAGEID": stack_extern_id(stack_id),
    }
    products, found = _sky_products(
        "PPSTACK.OUTPUT",
        imaging.smooth3(mean),
        mask,
        var,
        block,
        cell,
        zpt=zpt,
        exptime=exptime,
        fwhm=fwhm,
        header=header,
    )
    products["PPSTACK.SOURCES"] = products.pop("_SOURCES")
    flat = np.nan_to_num(mean).astype(np.float32)
    products.update(
        {
            "PPSTACK.OUTPUT.EXP": imaging.fits_image(exp_map.astype(np.float32)),
            "PPSTACK.OUTPUT.EXPNUM": imaging.fits_image(count.astype(np.uint16)),
            "PPSTACK.OUTPUT.EXPWT": imaging.fits_image((exp_map / max(exptime, 1e-9)).astype(np.float32)),
            "PPSTACK.UNCONV": imaging.fits_image(flat),
            "PPSTACK.UNCONV.MASK": imaging.fits_image(mask),
            "PPSTACK.UNCONV.VARIANCE": imaging.fits_image(np.nan_to_num(var).astype(np.float32)),
            "PPSTACK.UNCONV.EXP": imaging.fits_image(exp_map.astype(np.float32)),
            "PPSTACK.UNCONV.EXPNUM": imaging.fits_image(count.astype(np.uint16)),
            "PPSTACK.UNCONV.EXPWT": imaging.fits_image((exp_map / max(exptime, 1e-9)).astype(np.float32)),
            "PPSTACK.OUTPUT.JPEG1": imaging.jpeg(imaging.bin_image(flat, int(_r(block, "BIN1")))),
            "PPSTACK.OUTPUT.JPEG2": imaging.jpeg(imaging.bin_image(flat, int(_r(block, "BIN2")))),
            "PPSTACK.TARGET.PSF": _psf_file(fwhm),
            "PPSTACK.CONFIG": dump,
            "LOG.EXP": _log(
                f"ppStack {cell.skycell_id} {filter_name}: {len(warps)} inputs, "
                f"{len(found.table)} detections",
                _detection_log(found.table),
            ),
        }
    )
    # one convolution kernel per input, {OUTPUT}.{FILE.INDEX}.kernel
    kernel = imaging.fits_image(np.full((3, 3), 1 / 9, dtype=np.float32))
    products.update({f"PPSTACK.CONV.KERNEL:{i}": kernel for i in range(len(warps))})
    return products


def process_diff(
    warp: WarpPixels, stack: WarpPixels, cell: Skycell, block: Block, *, dump: bytes, fwhm: float = 2.5
) -> dict[str, bytes]:
    """warp - stack -> diff: both convolved to a common smoothing, then subtracted."""
    in_conv = imaging.smooth3(np.where(warp.mask == 0, warp.image, 0.0))
    ref_conv = imaging.smooth3(np.nan_to_num(stack.image))
    diff = (in_conv - ref_conv).astype(np.float32)
    mask = ((warp.mask != 0) | (stack.mask != 0)).astype(np.uint16)
    variance = (np.nan_to_num(warp.variance) + np.nan_to_num(stack.variance)).astype(np.float32)
    header = {"MJD-OBS": warp.mjd, "EXPTIME": warp.exptime, "ZPT_OBS": warp.zpt}
    products, found = _sky_products(
        "PPSUB.OUTPUT",
        diff,
        mask,
        variance,
        block,
        cell,
        zpt=warp.zpt,
        exptime=warp.exptime,
        fwhm=fwhm,
        header=header,
    )
    products["PPSUB.OUTPUT.SOURCES"] = products.pop("_SOURCES")
    inverse, inv_found = _sky_products(
        "PPSUB.INVERSE",
        -diff,
        mask,
        variance,
        block,
        cell,
        zpt=warp.zpt,
        exptime=warp.exptime,
        fwhm=fwhm,
        header=header,
    )
    products["PPSUB.INVERSE.SOURCES"] = inverse.pop("_SOURCES")
    products.update(inverse)
    products.update(
        {
            "PPSUB.INPUT.CONV": imaging.fits_image(in_conv),
            "PPSUB.INPUT.CONV.MASK": imaging.fits_image(warp.mask.astype(np.uint16)),
            "PPSUB.INPUT.CONV.VARIANCE": imaging.fits_image(np.nan_to_num(warp.variance).astype(np.float32)),
            "PPSUB.REF.CONV": imaging.fits_image(ref_conv),
            "PPSUB.REF.CONV.MASK": imaging.fits_image(stack.mask.astype(np.uint16)),
            "PPSUB.REF.CONV.VARIANCE": imaging.fits_image(np.nan_to_num(stack.variance).astype(np.float32)),
            "PPSUB.OUTPUT.JPEG1": imaging.jpeg(imaging.bin_image(diff, int(_r(block, "BIN1")))),
            "PPSUB.OUTPUT.JPEG2": imaging.jpeg(imaging.bin_image(diff, int(_r(block, "BIN2")))),
            "PPSUB.OUTPUT.KERNELS": imaging.fits_image(np.full((3, 3), 1 / 9, dtype=np.float32)),
            "PPSUB.CONFIG": dump,
            "LOG.EXP": _log(
                f"ppSub {cell.skycell_id}: {len(found.table)} positive, "
                f"{len(inv_found.table)} negative detections",
                _detection_log(found.table),
            ),
        }
    )
    return products
