-- The update agent's own tables.
--
-- skycell: the tessellation's skycells (geometry of the warp, stack and diff pixel grids), so
-- a cleaned sky-stage run can be regenerated on the same grid. Written by whatever creates
-- the skycells (the survey generator here; the tessellation loader at a real site).
--
-- update_wait: a run in `update` whose inputs are not ready yet (they were asked to update
-- too) or whose regeneration failed for a reason that may pass (a volume down). The run is
-- not claimed again before not_before; nothing holds a claim while it waits. failed = 1: the
-- regeneration failed for good (the reason says why); only a new update request clears it.

CREATE TABLE skycell (
    tess_id VARCHAR(64) NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    ra DOUBLE NOT NULL,
    decl DOUBLE NOT NULL,
    size_px INT NOT NULL,
    scale_deg DOUBLE NOT NULL,
    PRIMARY KEY (tess_id, skycell_id)
) ENGINE=InnoDB;

CREATE TABLE update_wait (
    stage VARCHAR(16) NOT NULL,
    stage_id BIGINT NOT NULL,
    not_before DATETIME(6) NOT NULL,
    attempts INT NOT NULL DEFAULT 1,
    reason VARCHAR(1024) NOT NULL,
    failed TINYINT NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, stage_id),
    KEY update_wait_not_before (not_before)
) ENGINE=InnoDB;
