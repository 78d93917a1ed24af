"""Per-stage named queries are found through one accessor, checked against the stage table."""

from __future__ import annotations

import pytest

from shared.db.queries import Q
from shared.processing.stages import (
    QUERY_FAMILIES,
    STAGES,
    TABLE_FAMILIES,
    StageError,
    stage_query,
    table_query,
)


def test_every_family_has_a_query_for_each_of_its_stages_and_tables():
    for family, names in QUERY_FAMILIES.items():
        assert names, family
        for name in names:
            assert stage_query(family, name).name == f"{family}_{name}"
    for family, tables in TABLE_FAMILIES.items():
        for table in tables:
            assert table_query(family, table).name == f"{family}_{table}"


def test_no_query_named_after_a_stage_is_outside_a_family():
    """A new per-stage query (or a typo in one's name) must be declared, or it would be
    reachable only by building its name from strings."""
    singles = {"cleanup_camera_of_chip", "psps_st_stack"}  # about one stage, not a family
    for name in Q.names():
        for stage_name in STAGES:
            if name.endswith(f"_{stage_name}") and name not in singles:
                family = name.removesuffix(f"_{stage_name}")
                assert stage_name in QUERY_FAMILIES.get(family, ()), name


def test_an_unknown_family_or_stage_is_refused_by_name():
    with pytest.raises(StageError, match="no per-stage query family 'cleanup_finsh'"):
        stage_query("cleanup_finsh", "chip")
    with pytest.raises(StageError, match="cleanup_finish has no 'raw' query"):
        stage_query("cleanup_finish", "raw")
