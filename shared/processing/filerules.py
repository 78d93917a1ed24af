"""File rules: every product file of a component, its class, and what deletes it.

One table of data (REFERENCE 2), after the IPP's split file rules
(``ippconfig/recipes/filerules-split.mdc``: names and patterns) and ``ipp_cleanup.pl`` (what
each cleanup mode deletes); docs/lifecycles.md has the whole table with the places where this
project deliberately differs. Each rule has the IPP rule name, the name pattern (``{OUTPUT}``
is the component's path_base, ``{CHIP.NAME}`` its class_id, ``{FILE.INDEX}`` the index of one
input of a stack), its file class, and the cleanup targets that delete it. ``scrubbed``
deletes what ``cleaned`` does except the catalogs a clean deletes only with a good smf (seed
000: scrubbed "retains catalogs"); ``purged`` deletes more. Rules marked ``recovery`` also
have a destreak recovery copy (under magicDSFile.recovery_path_base) deleted with them; a
``censored`` rule (a camera run's smf) is kept while its two destreak copies go. Rules
marked ``needs_good_smf`` are deleted by a clean only when the camera run is full and its smf
opens as a valid smf (the chip cmf and b1). Rules marked ``compressed`` are logs that cleanup
replaces by a gzip copy, ``<name>.gz``; the IPP's own script writes ``<name>.bz2``, and this
project did before, so both names are known as compressed copies.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.processing.stages import stage

#: Deleted by every cleanup target.
CLEANED = frozenset({"cleaned", "scrubbed", "purged"})
#: Deleted by a clean (with a good smf, see ``needs_good_smf``) and by a purge, kept by a scrub.
CATALOG = frozenset({"cleaned", "purged"})
PURGED = frozenset({"purged"})
KEPT: frozenset[str] = frozenset()

#: The name cleanup gives a log's compressed copy, and the names of copies made elsewhere
#: (ipp_cleanup.pl's bzip2_file, and this project before it used gzip).
COMPRESSED_SUFFIX = ".gz"
COMPRESSED_SUFFIXES = (".gz", ".bz2")

#: The file classes a rule may have.
FILE_CLASSES = (
    "image",
    "mask",
    "variance",
    "catalog",
    "psf",
    "binned",
    "jpeg",
    "stats",
    "config",
    "log",
    "trace",
    "background",
    "pattern",
    "kernel",
    "template",
    "residual",
    "exposure",
    "streak_mask",
    "raw",
)


@dataclass(frozen=True)
class FileRule:
    name: str
    stage: str
    pattern: str
    file_class: str
    deleted_by: frozenset[str]
    recovery: bool = False
    needs_good_smf: bool = False
    #: One file per chip of the exposure (camera-stage streak masks).
    per_chip: bool = False
    #: One file per input of the run (a stack's convolution kernels, ``{FILE.INDEX}``).
    per_input: bool = False
    #: A log that cleanup replaces by its gzip copy (ipp_cleanup.pl compresses these).
    compressed: bool = False
    #: Written by an update of the run (its log, its stats), never made again by one.
    from_update: bool = False
    #: A file the destreak censors in place (a camera run's smf): the two copies it leaves,
    #: the uncensored backup and the recovery of what was censored (magicDSFile's
    #: backup_path_base and recovery_path_base), go at any cleanup; the file itself is kept
    #: (seed 000: "censored camera runs ... This will remove 2 copies of the smf for each run").
    censored: bool = False

    def filename(self, path_base: str, component: str | None = None, *, index: int | None = None) -> str:
        """The file's key: the pattern with {OUTPUT}, {CHIP.NAME} and {FILE.INDEX} filled."""
        name = self.pattern.replace("{OUTPUT}", path_base)
        if "{CHIP.NAME}" in name:
            if not component:
                raise ValueError(f"rule {self.name} needs a chip name")
            name = name.replace("{CHIP.NAME}", component)
        if "{FILE.INDEX}" in name:
            if index is None or index < 0:
                raise ValueError(f"rule {self.name} needs an input index")
            name = name.replace("{FILE.INDEX}", str(index))
        return name

    def deleted_for(self, target_state: str) -> bool:
        return target_state in self.deleted_by


def compressed_keys(key: str) -> list[str]:
    """The names a compressed copy of the log ``key`` may have, the one cleanup writes first."""
    return [key + suffix for suffix in COMPRESSED_SUFFIXES]


def _r(
    stage_name: str, rows: list[tuple[str, str, str, frozenset[str]]], **flags: dict[str, bool]
) -> list[FileRule]:
    return [FileRule(n, stage_name, p, c, d, **flags.get(n, {})) for n, p, c, d in rows]


RULES: tuple[FileRule, ...] = tuple(
    _r(
        "raw",
        [
            ("RAW.IMAGE", "{OUTPUT}.{CHIP.NAME}.fits", "raw", KEPT),
        ],
    )
    + _r(
        "chip",
        [
            ("PPIMAGE.CHIP", "{OUTPUT}.{CHIP.NAME}.ch.fits", "image", CLEANED),
            ("PPIMAGE.CHIP.MASK", "{OUTPUT}.{CHIP.NAME}.ch.mk.fits", "mask", CLEANED),
            ("PPIMAGE.CHIP.VARIANCE", "{OUTPUT}.{CHIP.NAME}.ch.wt.fits", "variance", CLEANED),
            ("PPIMAGE.PATTERN", "{OUTPUT}.{CHIP.NAME}.ptn", "pattern", CLEANED),
            ("TRACE.IMFILE", "{OUTPUT}.{CHIP.NAME}.trace", "trace", CLEANED),
            ("PSPHOT.OUTPUT", "{OUTPUT}.{CHIP.NAME}.cmf", "catalog", CATALOG),
            ("PPIMAGE.BIN1", "{OUTPUT}.{CHIP.NAME}.b1.fits", "binned", CATALOG),
            ("PSPHOT.PSF.SAVE", "{OUTPUT}.{CHIP.NAME}.psf", "psf", PURGED),
            ("PPIMAGE.OUTPUT.FPA1", "{OUTPUT}.b1.fits", "binned", PURGED),
            ("PPIMAGE.OUTPUT.FPA2", "{OUTPUT}.b2.fits", "binned", PURGED),
            ("PPIMAGE.BIN2", "{OUTPUT}.{CHIP.NAME}.b2.fits", "binned", PURGED),
            ("PPIMAGE.JPEG1", "{OUTPUT}.b1.jpg", "jpeg", PURGED),
            ("PPIMAGE.JPEG2", "{OUTPUT}.b2.jpg", "jpeg", PURGED),
            ("PPIMAGE.STATS", "{OUTPUT}.{CHIP.NAME}.stats", "stats", PURGED),
            ("PPIMAGE.CONFIG", "{OUTPUT}.{CHIP.NAME}.ppImage.mdc", "config", PURGED),
            ("PSPHOT.BACKMDL", "{OUTPUT}.{CHIP.NAME}.mdl.fits", "background", KEPT),
            ("LOG.IMFILE", "{OUTPUT}.{CHIP.NAME}.log", "log", KEPT),
            ("LOG.IMFILE.UPDATE", "{OUTPUT}.{CHIP.NAME}.log.update", "log", KEPT),
        ],
        **{
            "PPIMAGE.CHIP": {"recovery": True},
            "PPIMAGE.CHIP.MASK": {"recovery": True},
            "PPIMAGE.CHIP.VARIANCE": {"recovery": True},
            "PSPHOT.OUTPUT": {"needs_good_smf": True},
            "PPIMAGE.BIN1": {"needs_good_smf": True},
            "LOG.IMFILE": {"compressed": True},
            "LOG.IMFILE.UPDATE": {"compressed": True, "from_update": True},
        },
    )
    + _r(
        "camera",
        [
            ("PSASTRO.OUTPUT", "{OUTPUT}.smf", "catalog", KEPT),
            ("PSASTRO.OUTPUT.MASK", "{OUTPUT}.{CHIP.NAME}.mk.fits", "streak_mask", KEPT),
            ("PSASTRO.CONFIG", "{OUTPUT}.psastro.mdc", "config", KEPT),
            ("PSASTRO.STATS", "{OUTPUT}.stats", "stats", PURGED),
            ("PPIMAGE.JPEG1", "{OUTPUT}.b1.jpg", "jpeg", PURGED),
            ("PPIMAGE.JPEG2", "{OUTPUT}.b2.jpg", "jpeg", PURGED),
            ("LOG.EXP", "{OUTPUT}.log", "log", KEPT),
        ],
        **{"PSASTRO.OUTPUT.MASK": {"per_chip": True}, "PSASTRO.OUTPUT": {"censored": True}},
    )
    + _r(
        "warp",
        [
            ("PSWARP.OUTPUT", "{OUTPUT}.fits", "image", CLEANED),
            ("PSWARP.OUTPUT.MASK", "{OUTPUT}.mask.fits", "mask", CLEANED),
            ("PSWARP.OUTPUT.VARIANCE", "{OUTPUT}.wt.fits", "variance", CLEANED),
            ("PSWARP.OUTPUT.SOURCES", "{OUTPUT}.cmf", "catalog", CLEANED),
            ("SKYCELL.TEMPLATE", "{OUTPUT}.skycell", "template", CLEANED),
            ("PSPHOT.RESID", "{OUTPUT}.fpa.res.fits", "residual", CLEANED),
            ("PSPHOT.PSF.SKY.SAVE", "{OUTPUT}.psf", "psf", CLEANED),
            ("PSWARP.BIN1", "{OUTPUT}.b1.fits", "binned", PURGED),
            ("PSWARP.BIN2", "{OUTPUT}.b2.fits", "binned", PURGED),
            ("SKYCELL.STATS", "{OUTPUT}.stats", "stats", PURGED),
            ("SKYCELL.STATS.UPDATE", "{OUTPUT}.stats.update", "stats", PURGED),
            ("PSWARP.CONFIG", "{OUTPUT}.pswarp.mdc", "config", PURGED),
            ("LOG.EXP", "{OUTPUT}.log", "log", KEPT),
            ("LOG.EXP.UPDATE", "{OUTPUT}.log.update", "log", KEPT),
        ],
        **{
            **{
                n: {"recovery": True}
                for n in ("PSWARP.OUTPUT", "PSWARP.OUTPUT.MASK", "PSWARP.OUTPUT.VARIANCE")
            },
            "SKYCELL.STATS.UPDATE": {"from_update": True},
            "LOG.EXP": {"compressed": True},
            "LOG.EXP.UPDATE": {"compressed": True, "from_update": True},
        },
    )
    + _r(
        "diff",
        [
            ("PPSUB.OUTPUT", "{OUTPUT}.fits", "image", CLEANED),
            ("PPSUB.OUTPUT.MASK", "{OUTPUT}.mask.fits", "mask", CLEANED),
            ("PPSUB.OUTPUT.VARIANCE", "{OUTPUT}.wt.fits", "variance", CLEANED),
            ("PPSUB.INVERSE", "{OUTPUT}.inv.fits", "image", CLEANED),
            ("PPSUB.INVERSE.MASK", "{OUTPUT}.inv.mask.fits", "mask", CLEANED),
            ("PPSUB.INVERSE.VARIANCE", "{OUTPUT}.inv.wt.fits", "variance", CLEANED),
            ("PPSUB.INPUT.CONV", "{OUTPUT}.inConv.fits", "image", CLEANED),
            ("PPSUB.INPUT.CONV.MASK", "{OUTPUT}.inConv.mk.fits", "mask", CLEANED),
            ("PPSUB.INPUT.CONV.VARIANCE", "{OUTPUT}.inConv.wt.fits", "variance", CLEANED),
            ("PPSUB.REF.CONV", "{OUTPUT}.refConv.fits", "image", CLEANED),
            ("PPSUB.REF.CONV.MASK", "{OUTPUT}.refConv.mk.fits", "mask", CLEANED),
            ("PPSUB.REF.CONV.VARIANCE", "{OUTPUT}.refConv.wt.fits", "variance", CLEANED),
            ("PPSUB.OUTPUT.JPEG1", "{OUTPUT}.b1.jpg", "jpeg", CLEANED),
            ("PPSUB.OUTPUT.KERNELS", "{OUTPUT}.subkernel", "kernel", PURGED),
            ("PPSUB.OUTPUT.JPEG2", "{OUTPUT}.b2.jpg", "jpeg", PURGED),
            ("PPSUB.OUTPUT.SOURCES", "{OUTPUT}.cmf", "catalog", PURGED),
            ("PPSUB.INVERSE.SOURCES", "{OUTPUT}.inv.cmf", "catalog", PURGED),
            ("PPSUB.CONFIG", "{OUTPUT}.ppSub.mdc", "config", KEPT),
            ("LOG.EXP", "{OUTPUT}.log", "log", KEPT),
            ("LOG.EXP.UPDATE", "{OUTPUT}.log.update", "log", KEPT),
        ],
        **{
            **{
                n: {"recovery": True}
                for n in (
                    "PPSUB.OUTPUT",
                    "PPSUB.OUTPUT.MASK",
                    "PPSUB.OUTPUT.VARIANCE",
                    "PPSUB.INVERSE",
                    "PPSUB.INVERSE.MASK",
                    "PPSUB.INVERSE.VARIANCE",
                )
            },
            "LOG.EXP": {"compressed": True},
            "LOG.EXP.UPDATE": {"compressed": True, "from_update": True},
        },
    )
    + _r(
        "stack",
        [
            ("PPSTACK.OUTPUT", "{OUTPUT}.fits", "image", CLEANED),
            ("PPSTACK.OUTPUT.MASK", "{OUTPUT}.mask.fits", "mask", CLEANED),
            ("PPSTACK.OUTPUT.VARIANCE", "{OUTPUT}.wt.fits", "variance", CLEANED),
            ("PPSTACK.OUTPUT.EXP", "{OUTPUT}.exp.fits", "exposure", CLEANED),
            ("PPSTACK.OUTPUT.EXPNUM", "{OUTPUT}.num.fits", "exposure", CLEANED),
            ("PPSTACK.OUTPUT.EXPWT", "{OUTPUT}.expwt.fits", "exposure", CLEANED),
            ("PPSTACK.UNCONV", "{OUTPUT}.unconv.fits", "image", CLEANED),
            ("PPSTACK.UNCONV.MASK", "{OUTPUT}.unconv.mask.fits", "mask", CLEANED),
            ("PPSTACK.UNCONV.VARIANCE", "{OUTPUT}.unconv.wt.fits", "variance", CLEANED),
            ("PPSTACK.UNCONV.EXP", "{OUTPUT}.unconv.exp.fits", "exposure", CLEANED),
            ("PPSTACK.UNCONV.EXPNUM", "{OUTPUT}.unconv.num.fits", "exposure", CLEANED),
            ("PPSTACK.UNCONV.EXPWT", "{OUTPUT}.unconv.expwt.fits", "exposure", CLEANED),
            ("PPSTACK.CONV.KERNEL", "{OUTPUT}.{FILE.INDEX}.kernel", "kernel", PURGED),
            ("PPSTACK.OUTPUT.JPEG1", "{OUTPUT}.b1.jpg", "jpeg", PURGED),
            ("PPSTACK.OUTPUT.JPEG2", "{OUTPUT}.b2.jpg", "jpeg", PURGED),
            ("PPSTACK.SOURCES", "{OUTPUT}.cmf", "catalog", KEPT),
            ("PPSTACK.TARGET.PSF", "{OUTPUT}.target.psf", "psf", KEPT),
            ("PPSTACK.CONFIG", "{OUTPUT}.ppStack.mdc", "config", KEPT),
            ("LOG.EXP", "{OUTPUT}.log", "log", KEPT),
        ],
        **{"PPSTACK.CONV.KERNEL": {"per_input": True}},
    )
)


def rules_for(stage_name: str) -> list[FileRule]:
    """Every rule of a stage, in table order."""
    stage(stage_name)  # raises StageError for an unknown stage
    return [r for r in RULES if r.stage == stage_name]


def regenerated_rules(stage_name: str) -> list[FileRule]:
    """Per-component files an update makes again when missing: everything a cleanup may
    delete, except a chip's cmf (never re-created), its run-level files, the config dump
    (handled apart), files an update writes about itself, and files per chip or per input of
    the run (the camera's streak masks are never deleted; a stack's kernels only by a purge,
    after which no update is allowed) (REFERENCE 3)."""
    return [
        r
        for r in rules_for(stage_name)
        if r.deleted_by
        and r.file_class != "config"
        and not r.per_chip
        and not r.per_input
        and not r.from_update
        and not (stage_name == "chip" and (r.name == "PSPHOT.OUTPUT" or "{CHIP.NAME}" not in r.pattern))
    ]


def rule(stage_name: str, name: str) -> FileRule:
    for r in RULES:
        if r.stage == stage_name and r.name == name:
            return r
    raise KeyError(f"no file rule {name} for stage {stage_name}")


def config_rule(stage_name: str) -> FileRule:
    """The rule of the stage's config dump (the guard of goto_cleaned / goto_scrubbed)."""
    (found,) = [r for r in rules_for(stage_name) if r.file_class == "config"]
    return found


def compressed_rules(stage_name: str) -> list[FileRule]:
    """The logs a cleanup of ``stage_name`` compresses (ipp_cleanup.pl's bzip2_file calls)."""
    return [r for r in rules_for(stage_name) if r.compressed]


def deleted_by(stage_name: str, target_state: str, *, good_smf: bool = True) -> list[FileRule]:
    """The rules a cleanup to ``target_state`` deletes for one component of ``stage_name``;
    a clean deletes the ``needs_good_smf`` catalogs only with ``good_smf``."""
    return [
        r
        for r in rules_for(stage_name)
        if r.deleted_for(target_state)
        and not (r.needs_good_smf and target_state == "cleaned" and not good_smf)
    ]
