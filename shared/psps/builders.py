"""What goes into each batch type: IPP values mapped to the PSPS tables (REFERENCE 10).

- IN: Filter (g, r, i, z, y = 1..5) and Survey (the config's survey id and name).
- P2: one exposure's smf: FrameMeta from the database rows, ImageMeta per chip from its
  header, Detection per detection with objID / detectID / ippObjID from the DVO database.
- ST: one stack cmf: StackMeta, StackDetection with objID / stackDetectID / ippObjID from the
  DVO database the stack was merged into (its IMAGEID an EXTERN_ID), StackToImage.

Fluxes are Jansky: zp = 0.001*C_LAM + K*(airmass - 1) - M_CAL from the detection's photcode
and DVO measurement, flux_Jy = counts/s * 10^(-0.4*zp + 3.56). Every smf detection must be
found in DVO, or the batch fails with the count missing (test mode: they are dropped and
counted instead).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.core import ids
from shared.formats.catalogs import ChipCatalog
from shared.psps.batches import PROCESSING_VERSION, BatchError, BuiltTable, fill, without_duplicates
from shared.psps.dvocache import DvoCache, Found
from shared.psps.schema import batch_tables

Array = np.ndarray[Any, Any]
FILTER_IDS = {"g": 1, "r": 2, "i": 3, "z": 4, "y": 5}
#: Test mode loads this chip only (seed 003: "it will only process OTA 33").
TEST_CHIP = "XY33"


def _tables(batch_type: str) -> dict[str, Any]:
    return {t.name: t for t in batch_tables(batch_type)}


def in_batch(config: str, survey_id: int) -> list[BuiltTable]:
    t = _tables("IN")
    names = list(FILTER_IDS)
    return [
        fill(t["Filter"], {"filterID": [FILTER_IDS[n] for n in names], "filterType": names}, len(names)),
        fill(
            t["Survey"],
            {"surveyID": survey_id, "name": config[:32], "description": f"IPP loading config {config}"[:255]},
            1,
        ),
    ]


@dataclass
class P2Result:
    tables: list[BuiltTable]
    detections: int
    missing: int = 0
    notes: list[str] = field(default_factory=list)
    #: Rows discarded because their primary key repeated an earlier row's.
    duplicates: int = 0


#: The table whose rows a batch's detections count is of.
COUNTED = {"P2": "Detection", "ST": "StackDetection", "OB": "ObjectThin"}


def discard_duplicates(result: P2Result, batch_type: str) -> P2Result:
    """Every table of the batch without repeated primary keys (the first row kept); the
    discarded rows are counted and noted, and the detections count follows."""
    tables = []
    for built in result.tables:
        kept, dropped = without_duplicates(built)
        if dropped:
            result.notes.append(f"{built.table.name}: {dropped} repeated rows discarded")
            result.duplicates += dropped
            if built.table.name == COUNTED.get(batch_type):
                result.detections = len(kept.rows)
        tables.append(kept)
    result.tables = tables
    return result


def _random(ids_: Array) -> Array:
    """A deterministic value in [0, 1) per id (a 64-bit mix of the id)."""
    x = ids_.astype(np.uint64)
    x = (x ^ (x >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    x = (x ^ (x >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    x = x ^ (x >> np.uint64(33))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def p2_batch(
    frame: Mapping[str, Any],
    chips: list[ChipCatalog],
    dvo: DvoCache,
    *,
    survey_id: int,
    smf_md5: str,
    test_mode: bool = False,
) -> P2Result:
    """FrameMeta, ImageMeta and Detection of one exposure."""
    t = _tables("P2")
    if not chips:
        raise BatchError(f"camRun {frame['cam_id']}: the smf holds no chips")
    if test_mode:
        chips = [c for c in chips if c.class_id == TEST_CHIP]
        if not chips:
            raise BatchError(
                f"camRun {frame['cam_id']}: test mode loads OTA 33 and the smf has no {TEST_CHIP}"
            )
    filter_name = str(frame["filter"]).split(".")[0]
    filter_id = FILTER_IDS.get(filter_name)
    if filter_id is None:
        raise BatchError(f"camRun {frame['cam_id']}: unknown filter {frame['filter']!r}")
    frame_id = int(frame["exp_id"])
    exp_time = float(frame["exp_time"])
    mjd = float(chips[0].header.get("MJD-OBS", np.nan))
    photcodes = dvo.photcodes()
    images, detections = [], []
    result = P2Result([], 0)
    everything = _look_up(chips, dvo)
    for chip, found in zip(chips, everything, strict=True):
        image, det, missing = _chip(
            chip,
            found,
            photcodes,
            frame_id=frame_id,
            filter_id=filter_id,
            survey_id=survey_id,
            exp_time=exp_time,
            test_mode=test_mode,
            notes=result.notes,
            fallback_airmass=float(frame["airmass"] or 0),
        )
        images.append(image)
        detections.append(det)
        if missing:
            result.missing += missing
            result.notes.append(f"{chip.class_id}: {missing} detections not in DVO (ignored)")
    frame_values = {
        "frameID": frame_id,
        "frameName": str(frame["exp_name"])[:32],
        "surveyID": survey_id,
        "filterID": filter_id,
        "ippChipID": int(frame["chip_id"]),
        "ippCamID": int(frame["cam_id"]),
        "cameraID": 1,
        "telescopeID": 1,
        "analysisVer": str(frame["software_ver"] or "")[:100],
        "md5sum": smf_md5,
        "nOTA": len(chips),
        "expStart": mjd,
        "expTime": exp_time,
        "airmass": float(frame["airmass"] or 0),
        "raBore": float(frame["ra"]),
        "decBore": float(frame["decl"]),
    }
    merged = {k: np.concatenate([d[k] for d in detections]) for k in detections[0]}
    n = len(merged["objID"])
    result.tables = [
        fill(t["FrameMeta"], frame_values, 1),
        fill(t["ImageMeta"], {k: [i[k] for i in images] for k in images[0]}, len(images)),
        fill(t["Detection"], merged, n),
    ]
    result.detections = n
    return result


def _look_up(chips: list[ChipCatalog], dvo: DvoCache) -> list[Found]:
    """Every chip's detections looked up in DVO in one pass over the regions."""
    image_ids, sizes = [], []
    for chip in chips:
        try:
            extern = int(chip.header["IMAGEID"])
        except (KeyError, ValueError, TypeError):
            raise BatchError(f"chip {chip.class_id}: header lacks IMAGEID") from None
        image_id = int(dvo.image_ids(np.array([extern], dtype=np.int64))[0])
        if image_id < 0:
            raise BatchError(f"chip {chip.class_id}: IMAGEID {extern} is not in Images.dat")
        image_ids.append(np.full(len(chip.table), image_id, dtype=np.int64))
        sizes.append(len(chip.table))
    tables = [c.table for c in chips]
    found = dvo.find(
        np.concatenate(image_ids),
        np.concatenate([t["IPP_IDET"] for t in tables]),
        np.concatenate([t["RA_PSF"] for t in tables]),
        np.concatenate([t["DEC_PSF"] for t in tables]),
    )
    bounds = np.cumsum([0, *sizes])
    return [
        Found(*(getattr(found, f)[a:b] for f in Found.__dataclass_fields__))
        for a, b in itertools.pairwise(bounds)
    ]


def _required(chip: ChipCatalog, key: str, fallback: float, test_mode: bool, notes: list[str]) -> float:
    """A header value the batch needs: its absence fails the batch, except in test mode,
    where the fallback is used and the gap listed (seed 003: "it will ignore certain missing
    values, which would otherwise fail the batch")."""
    try:
        return float(chip.header[key])
    except (KeyError, ValueError, TypeError):
        if not test_mode:
            raise BatchError(f"chip {chip.class_id}: header lacks {key}") from None
        notes.append(f"{chip.class_id}: {key} missing from its header ({fallback} used)")
        return fallback


def _chip(
    chip: ChipCatalog,
    found: Found,
    photcodes: Array,
    *,
    frame_id: int,
    filter_id: int,
    survey_id: int,
    exp_time: float,
    test_mode: bool,
    notes: list[str],
    fallback_airmass: float,
) -> tuple[dict[str, Any], dict[str, Array], int]:
    h, tab = chip.header, chip.table
    where = f"chip {chip.class_id}"
    airmass = _required(chip, "AIRMASS", fallback_airmass, test_mode, notes)
    mjd = _required(chip, "MJD-OBS", -999.0, test_mode, notes)
    ccd = int(chip.class_id[2:4])
    missing = int((~found.found).sum())
    if missing and not test_mode:
        raise BatchError(f"{where}: {missing} of {len(tab)} detections not found in DVO")
    keep = found.found
    tab = tab[keep]
    code = found.photcode[keep]
    by_code = photcodes[np.argsort(photcodes["CODE"], kind="stable")]
    prow = np.clip(np.searchsorted(by_code["CODE"], code), 0, max(len(by_code) - 1, 0))
    if len(code) and (len(by_code) == 0 or not np.all(by_code["CODE"][prow] == code)):
        raise BatchError(f"{where}: photcodes missing from Photcodes.dat")
    c_lam = by_code["C_LAM"][prow].astype(np.float64)
    k = by_code["K"][prow].astype(np.float64)
    zp = 0.001 * c_lam + k * (airmass - 1.0) - found.m_cal[keep]
    to_jy = 10 ** (-0.4 * zp + 3.56) / exp_time
    scale = tab["PLTSCALE"]  # arcsec per pixel at each detection
    detect_id = found.detect_id[keep]
    values: dict[str, Array] = {
        "objID": found.obj_id[keep],
        "detectID": detect_id,
        "ippObjID": found.ipp_obj_id[keep],
        "ippDetectID": tab["IPP_IDET"].astype(np.int64),
        "filterID": np.full(len(tab), filter_id),
        "surveyID": np.full(len(tab), survey_id),
        "imageID": np.full(len(tab), ids.image_id(frame_id, ccd), dtype=np.int64),
        "randomDetID": _random(detect_id),
        "dvoRegionID": found.region[keep],
        "obsTime": np.full(len(tab), mjd),
        "xPos": tab["X_PSF"],
        "yPos": tab["Y_PSF"],
        "xPosErr": tab["X_PSF_SIG"],
        "yPosErr": tab["Y_PSF_SIG"],
        "pltScale": tab["PLTSCALE"],
        "posAngle": tab["POSANGLE"],
        "ra": tab["RA_PSF"],
        "dec": tab["DEC_PSF"],
        "raErr": tab["X_PSF_SIG"] * scale,
        "decErr": tab["Y_PSF_SIG"] * scale,
        "extNSigma": tab["EXT_NSIGMA"],
        "zp": zp,
        "expTime": np.full(len(tab), exp_time),
        "airMass": np.full(len(tab), airmass),
        "psfFlux": tab["PSF_INST_FLUX"] * to_jy,
        "psfFluxErr": tab["PSF_INST_FLUX_SIG"] * to_jy,
        "psfMajorFWHM": tab["PSF_FWHM_MAJ"] * tab["PLTSCALE"],
        "psfMinorFWHM": tab["PSF_FWHM_MIN"] * tab["PLTSCALE"],
        "psfTheta": tab["PSF_THETA"],
        "psfCore": tab["PSF_CORE"],
        "psfQf": tab["PSF_QF"],
        "psfQfPerfect": tab["PSF_QF_PERFECT"],
        "psfChiSq": tab["PSF_CHISQ"],
        "momentXX": tab["MOMENTS_XX"] * tab["PLTSCALE"] ** 2,
        "momentXY": tab["MOMENTS_XY"] * tab["PLTSCALE"] ** 2,
        "momentYY": tab["MOMENTS_YY"] * tab["PLTSCALE"] ** 2,
        "momentR1": tab["MOMENTS_R1"] * tab["PLTSCALE"],
        "momentRH": tab["MOMENTS_RH"] * tab["PLTSCALE"],
        "apFlux": tab["AP_FLUX"] * to_jy,
        "apFluxErr": tab["AP_FLUX_SIG"] * to_jy,
        "apRadius": tab["AP_MAG_RADIUS"] * tab["PLTSCALE"],
        "kronFlux": tab["KRON_FLUX"] * to_jy,
        "kronFluxErr": tab["KRON_FLUX_ERR"] * to_jy,
        "sky": tab["SKY"] * to_jy / tab["PLTSCALE"] ** 2,
        "skyErr": tab["SKY_SIGMA"] * to_jy / tab["PLTSCALE"] ** 2,
        "infoFlag": tab["FLAGS"].astype(np.int64),
        "infoFlag2": tab["FLAGS2"].astype(np.int64),
        "infoFlag3": np.zeros(len(tab), dtype=np.int32),
        "processingVersion": np.full(len(tab), PROCESSING_VERSION),
    }
    image = {
        "imageID": ids.image_id(frame_id, ccd),
        "frameID": frame_id,
        "ccdID": ccd,
        "photoCalID": int(code[0]) if len(code) else -999,
        "filterID": filter_id,
        "sky": float(h.get("MSKY_MN", np.nan)),
        "skyScat": float(h.get("MSKY_SIG", np.nan)),
        "nDetect": len(tab),
        "detectionThreshold": float(h.get("DETEFF.MAGREF", np.nan)),
        "astroScat": float(h.get("CERROR", np.nan)),
        "photoScat": float(h.get("ZPT_ERR", np.nan)),
        "nAstroRef": int(h.get("NASTRO", -999)),
    }
    return image, values, missing


def _skycell_parts(skycell_id: str) -> tuple[int, int]:
    """(projectionID, skyCellID) of ``skycell.PPPP.NNN`` ((-1, 255) when not of that shape)."""
    parts = skycell_id.split(".")
    if len(parts) == 3 and all(p.isascii() and p.isdigit() for p in parts[1:]):
        return int(parts[1]), int(parts[2])
    return -1, 255


def st_batch(
    stack: Mapping[str, Any],
    header: Any,
    table: Array,
    warp_ids: list[int],
    dvo: DvoCache,
    *,
    batch_id: int,
    survey_id: int,
) -> P2Result:
    """StackMeta, StackDetection and StackToImage of one stack cmf (one skycell, one filter).

    The ids come from DVO, as for P2 (seed 003): the cmf's IMAGEID is an Images.dat EXTERN_ID,
    whose IMAGE_ID and each detection's IPP_IDET find its measurement; objID and ippObjID are
    its object's, stackDetectID the measurement's EXT_ID ((35 << 56) + (EXTERN_ID << 28) +
    IPP_IDET, REFERENCE 10). A detection DVO lacks fails the batch."""
    t = _tables("ST")
    stack_id = int(stack["stack_id"])
    filter_name = str(stack["filter"]).split(".")[0]
    filter_id = FILTER_IDS.get(filter_name)
    if filter_id is None:
        raise BatchError(f"stackRun {stack_id}: unknown filter {stack['filter']!r}")
    try:
        zp = float(header["FPA.ZP"])
        exp_time = float(header["EXPTIME"])
    except (KeyError, ValueError, TypeError):
        raise BatchError(f"stackRun {stack_id}: cmf header lacks FPA.ZP or EXPTIME") from None
    projection, cell = _skycell_parts(str(stack["skycell_id"]))
    n = len(table)
    to_jy = 10 ** (-0.4 * zp + 3.56) / exp_time
    found = _look_up_stack(stack_id, header, table, dvo)
    values = {
        "objID": found.obj_id,
        "stackDetectID": found.detect_id,
        "ippObjID": found.ipp_obj_id,
        "stackImageID": stack_id,
        "filterID": filter_id,
        "surveyID": survey_id,
        "ra": table["RA_PSF"],
        "dec": table["DEC_PSF"],
        "psfFlux": table["PSF_INST_FLUX"] * to_jy,
        "psfFluxErr": table["PSF_INST_FLUX_SIG"] * to_jy,
        "apFlux": table["AP_FLUX"] * to_jy,
        "kronFlux": table["KRON_FLUX"] * to_jy,
        "sky": table["SKY"] * to_jy / np.where(table["PLTSCALE"] > 0, table["PLTSCALE"], np.nan) ** 2,
        "infoFlag": np.asarray(table["FLAGS"], dtype=np.int64),
    }
    meta = {
        "stackImageID": stack_id,
        "batchID": batch_id,
        "surveyID": survey_id,
        "filterID": filter_id,
        "skyCellID": cell,
        "projectionID": projection,
        "tessID": str(stack["tess_id"] or "")[:32],
        "zp": zp,
        "expTime": exp_time,
        "nInputs": int(header.get("NINPUTS", len(warp_ids))),
        "mjdObs": float(header.get("MJD-OBS", np.nan)),
    }
    tables = [
        fill(t["StackMeta"], meta, 1),
        fill(t["StackDetection"], values, n),
        fill(t["StackToImage"], {"stackImageID": stack_id, "imageID": warp_ids}, len(warp_ids)),
    ]
    return P2Result(tables, n)


def _look_up_stack(stack_id: int, header: Any, table: Array, dvo: DvoCache) -> Found:
    """Every detection of a stack cmf found in DVO through its IMAGEID (an EXTERN_ID)."""
    where = f"stackRun {stack_id}"
    try:
        extern = int(header["IMAGEID"])
    except (KeyError, ValueError, TypeError):
        raise BatchError(f"{where}: cmf header lacks IMAGEID") from None
    image_id = int(dvo.image_ids(np.array([extern], dtype=np.int64))[0])
    if image_id < 0:
        raise BatchError(f"{where}: IMAGEID {extern} is not in Images.dat (not merged into this DVO)")
    n = len(table)
    found = dvo.find(
        np.full(n, image_id, dtype=np.int64),
        np.asarray(table["IPP_IDET"], dtype=np.int64),
        np.asarray(table["RA_PSF"], dtype=np.float64),
        np.asarray(table["DEC_PSF"], dtype=np.float64),
    )
    missing = int((~found.found).sum())
    if missing:
        raise BatchError(f"{where}: {missing} of {n} stack detections not found in DVO")
    return found


def ob_batch(
    region_index: int, objects: Array, averages: Array, *, batch_id: int, survey_id: int
) -> P2Result:
    """ObjectThin (one row per DVO object) and MeanObject (per object and filter) of one
    DVO region (.cpt + .cps)."""
    t = _tables("OB")
    n = len(objects)
    obj = np.asarray(objects["EXT_ID"], dtype=np.int64)
    ave = np.asarray(averages["AVE_REF"], dtype=np.int64)
    if len(ave) and (ave.min() < 0 or ave.max() >= n):
        raise BatchError(f"region {region_index}: .cps AVE_REF outside its {n} objects")
    filters = (np.asarray(averages["PHOTCODE"], dtype=np.int64) - 10000) // 100 + 1
    if len(filters) and (filters.min() < 1 or filters.max() > 5):
        raise BatchError(f"region {region_index}: .cps photcodes are not of the five filters")
    dec = np.asarray(objects["DEC"], dtype=np.float64)
    thin = {
        "objID": obj,
        "ippObjID": (np.asarray(objects["CAT_ID"], dtype=np.int64) << 32)
        + np.asarray(objects["OBJ_ID"], dtype=np.int64),
        "surveyID": survey_id,
        "zoneID": np.floor((90.0 + dec) / ids.ZONE_HEIGHT_DEG).astype(np.int64),
        "randomID": _random(obj),
        "batchID": batch_id,
        "dvoRegionID": region_index,
        "raMean": objects["RA"],
        "decMean": dec,
        "nDetections": np.asarray(objects["NMEASURE"], dtype=np.int64),
    }
    mean = {
        "objID": obj[ave] if len(ave) else np.zeros(0, dtype=np.int64),
        "filterID": filters,
        "meanMag": averages["MAG"],
        "meanMagErr": averages["MAG_ERR"],
        "nMeasure": averages["NMEAS"],
        "flags": averages["FLAGS"],
    }
    return P2Result([fill(t["ObjectThin"], thin, n), fill(t["MeanObject"], mean, len(ave))], n)
