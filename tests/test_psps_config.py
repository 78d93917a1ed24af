"""PSPS table descriptions (VOTable files) and loading configs (ippctl psps config ...)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.psps import configs
from shared.psps.configs import ConfigError
from shared.psps.schema import BATCH_TYPES, SchemaError, batch_tables
from tests.helpers import run_ippctl

EXPECTED = {
    "IN": ["Filter", "Survey"],
    "P2": ["FrameMeta", "ImageMeta", "Detection"],
    "ST": ["StackMeta", "StackDetection", "StackToImage"],
    "OB": ["ObjectThin", "MeanObject"],
}


def test_every_batch_type_has_its_tables_described():
    assert {t: [x.name for x in batch_tables(t)] for t in BATCH_TYPES} == EXPECTED


def test_detection_columns_follow_reference_10():
    """Names, SQL-derived types and null values of REFERENCE 10."""
    det = {t.name: t for t in batch_tables("P2")}["Detection"]
    assert det.primary_key == ("objID", "detectID")
    names = [c.name for c in det.columns]
    assert names[:9] == [
        "objID",
        "detectID",
        "ippObjID",
        "ippDetectID",
        "filterID",
        "surveyID",
        "imageID",
        "randomDetID",
        "dvoRegionID",
    ]
    assert det.column("objID").dtype == np.int64 and det.column("filterID").dtype == np.uint8
    assert det.column("ra").dtype == np.float64 and det.column("psfFlux").dtype == np.float32
    assert det.column("psfFlux").null == -999 and det.column("dvoRegionID").null == -1
    assert det.column("extNSigma").null == 0 and det.column("airMass").null == 0
    assert det.column("psfFlux").unit == "Jy" and det.column("ra").ucd == "pos.eq.ra"
    assert all(c.description for c in det.columns)


def test_an_unknown_batch_type_is_refused():
    with pytest.raises(SchemaError, match="unknown batch type 'XX'"):
        batch_tables("XX")


# -- configs -------------------------------------------------------------------------------


ippctl = run_ippctl


def test_config_set_creates_with_defaults_and_changes_fields(db, test_dsn):
    out = ippctl(
        test_dsn,
        "psps",
        "config",
        "set",
        "cfgA",
        "min_ra=10",
        "ra_max=20.5",  # the name earlier versions used: an alias of max_ra
        "batch_types=st,p2",
        "test_mode=yes",
    )
    assert out.returncode == 0, out.stderr
    assert "cfgA.batch_types = P2,ST" in out.stdout and "cfgA.max_ra = 20.5" in out.stdout
    listing = ippctl(test_dsn, "psps", "config", "list")
    line = next(r for r in listing.stdout.splitlines() if r.startswith("cfgA"))
    assert "P2,ST" in line and "10..20.5" in line and "PSPS_cfgA" in line
    (row,) = [
        r
        for r in json.loads(ippctl(test_dsn, "psps", "config", "list", "--json").stdout)
        if r["name"] == "cfgA"
    ]
    # seed 003's defaults: datastore_type IPP_PSPS, datastore_publish 0
    assert (row["datastore_type"], row["datastore_publish"]) == ("IPP_PSPS", False)
    assert (row["min_ra"], row["max_ra"], row["min_dec"], row["max_dec"]) == (10.0, 20.5, -90.0, 90.0)


@pytest.mark.parametrize(
    ("assignment", "problem"),
    [
        ("min_ra=400", "min_ra = '400': expected 0..360"),
        ("ra_min=400", "min_ra = '400': expected 0..360"),
        ("max_dec=abc", "max_dec = 'abc': expected a number"),
        ("batch_types=P2,XX", "expected batch types among IN, P2, ST, OB"),
        ("box_size_deg=0", "box size above 0"),
        ("deletion_policy=merged:everything", "expected state:target"),
        ("epoch=yesterday", "expected a date and time"),
        ("no_such_field=1", "unknown config field 'no_such_field'"),
    ],
)
def test_config_set_refuses_bad_values_naming_the_field(db, test_dsn, assignment, problem):
    out = ippctl(test_dsn, "psps", "config", "set", "cfgB", assignment)
    assert out.returncode != 0 and problem in out.stderr, out.stderr
    assert "cfgB" not in ippctl(test_dsn, "psps", "config", "list").stdout


def test_an_empty_sky_box_is_refused(db, test_dsn):
    out = ippctl(test_dsn, "psps", "config", "set", "cfgC", "min_ra=30", "max_ra=30")
    assert out.returncode != 0 and "the sky box would be empty" in out.stderr


def test_config_edit_asks_as_queue_py_did_and_return_keeps_the_value(db, test_dsn):
    """Seed 003's dialogue: the name first, then `` * field (sqltype)? `` or `` * field
    (sqltype) hit return to accept default of: 'X'? ``; a bad answer is asked again."""
    answers = ["cfgE", "PSPS_edit", "", "1", "MD04.20120307", "/data/catdirs/MD04", "999", "5"] + [""] * 20
    out = ippctl(test_dsn, "psps", "config", "edit", stdin="\n".join(answers) + "\n")
    assert out.returncode == 0, out.stderr
    asked = out.stdout
    assert asked.startswith(" * Name for new config, or existing config to edit? ")
    for question in (
        " * datastore_product (varchar(64)) hit return to accept default of: 'PSPS_cfgE'? ",
        " * datastore_type (varchar(30)) hit return to accept default of: 'IPP_PSPS'? ",
        " * datastore_publish (tinyint(1)) hit return to accept default of: '0'? ",
        " * dvo_label (varchar(100))? ",
        " * dvo_location (varchar(1000))? ",
        " * min_ra (double) hit return to accept default of: '0'? ",
    ):
        assert question in asked
    for f in configs.FIELD_NAMES:
        assert f" * {f} (" in asked
    assert "min_ra = '999': expected 0..360" in asked
    listing = ippctl(test_dsn, "psps", "config", "list", "--json")
    (row,) = [r for r in json.loads(listing.stdout) if r["name"] == "cfgE"]
    assert row["datastore_product"] == "PSPS_edit" and row["min_ra"] == 5.0
    assert row["datastore_publish"] is True and row["dvo_label"] == "MD04.20120307"
    assert row["batch_types"] == "P2,ST,OB" and row["active"] is True
    # editing again offers the stored values as the defaults
    again = ippctl(test_dsn, "psps", "config", "edit", "cfgE", stdin="\n" * 20)
    assert " * datastore_product (varchar(64)) hit return to accept default of: 'PSPS_edit'? " in again.stdout
    assert " * min_ra (double) hit return to accept default of: '5'? " in again.stdout


def test_deletion_policy_parses_to_targets_per_state():
    assert configs.parse_policy(configs.DEFAULT_POLICY) == {
        "merge_worthy": ("datastore", "dxlayer"),
        "failed": ("datastore", "dxlayer"),
        "merged": ("local",),
    }
    with pytest.raises(ValueError, match="expected state:target"):
        configs.parse_policy("loaded:local")


def test_config_names_are_checked():
    with pytest.raises(ConfigError, match="not 'all'"):
        configs.check_name("all")
    with pytest.raises(ConfigError, match="is not valid"):
        configs.check_name("bad name")
