-- The IPP's own tools on this schema (issue 28): every column of the IPP's definition of
-- the tables both share, of a type that holds the IPP's values, and the IPP's tables its
-- ippTools queries join to. Facts from ps-ipp/ipp-trunk-20250502:
-- ippTools/share/pxadmin_create_tables.sql and DataStoreServer/scripts/tabledefs.sql
-- (listed in tests/corpus/ipp_schema/ipp_columns.txt).

-- warp -> fake -> camera, as the IPP chains them (warptool, disttool join warpRun to camRun
-- through fakeRun USING (fake_id), then USING (cam_id)): warpRun had a cam_id of its own,
-- which made those joins ambiguous. Every warp gets the fakeRun of its camera run.
INSERT INTO fakeRun (cam_id, state, workdir, label, data_group, dist_group, reduction, dvodb,
                     tess_id, end_stage)
SELECT c.cam_id, 'full', c.workdir, c.label, c.data_group, c.dist_group, c.reduction, c.dvodb,
       c.tess_id, c.end_stage
FROM camRun c
WHERE c.cam_id IN (SELECT w.cam_id FROM warpRun w WHERE w.fake_id IS NULL)
  AND NOT EXISTS (SELECT 1 FROM fakeRun f WHERE f.cam_id = c.cam_id);
UPDATE warpRun w
JOIN (SELECT cam_id, MIN(fake_id) AS fake_id FROM fakeRun GROUP BY cam_id) f ON f.cam_id = w.cam_id
SET w.fake_id = f.fake_id
WHERE w.fake_id IS NULL;
ALTER TABLE warpRun DROP INDEX warpRun_cam, DROP COLUMN cam_id, ADD KEY warpRun_fake (fake_id);

-- Label: whether a label is being processed (the tools take NULL as active) and a note.
ALTER TABLE Label ADD COLUMN active TINYINT NULL, ADD COLUMN comment VARCHAR(80) NULL,
    ADD KEY Label_active (active);

-- skycell: the IPP's centre, galactic position and size in degrees beside this project's
-- pixel geometry.
ALTER TABLE skycell
    ADD COLUMN radeg FLOAT NULL, ADD COLUMN decdeg FLOAT NULL,
    ADD COLUMN glong FLOAT NULL, ADD COLUMN glat FLOAT NULL,
    ADD COLUMN width FLOAT NULL, ADD COLUMN height FLOAT NULL;
UPDATE skycell SET radeg = ra, decdeg = decl, width = size_px * scale_deg, height = size_px * scale_deg;

-- The DataStore's tables as tabledefs.sql has them: eight type columns, product labels of 64,
-- an md5sum column as wide as the IPP's. dsreg registers files with no storage key (they lie
-- in its data store directory), so uri may be NULL.
ALTER TABLE dsFile
    ADD COLUMN type_col_4 VARCHAR(64) NULL, ADD COLUMN type_col_5 VARCHAR(64) NULL,
    ADD COLUMN type_col_6 VARCHAR(64) NULL, ADD COLUMN type_col_7 VARCHAR(64) NULL,
    MODIFY md5sum VARCHAR(255) NOT NULL,
    MODIFY uri VARCHAR(512) NULL DEFAULT NULL;
ALTER TABLE dsProduct
    MODIFY prod_col_0 VARCHAR(64) NULL, MODIFY prod_col_1 VARCHAR(64) NULL,
    MODIFY prod_col_2 VARCHAR(64) NULL, MODIFY prod_col_3 VARCHAR(64) NULL,
    MODIFY prod_col_4 VARCHAR(64) NULL, MODIFY prod_col_5 VARCHAR(64) NULL,
    MODIFY prod_col_6 VARCHAR(64) NULL, MODIFY prod_col_7 VARCHAR(64) NULL;
-- a product added before now has a registration time for dsrootindex to print
UPDATE dsProduct SET last_update = reg_time WHERE last_update IS NULL;

-- rcDestination and rcDSFileset hold a mirror's sources and the filesets it took (keyed
-- by source name); the IPP's columns are added beside them so that its disttool queries
-- over destinations, interests and filesets run here.
ALTER TABLE rcDestination
    ADD COLUMN dest_id BIGINT NOT NULL AUTO_INCREMENT UNIQUE FIRST,
    ADD COLUMN comment VARCHAR(255) NULL,
    ADD COLUMN dbname VARCHAR(64) NULL,
    ADD COLUMN dbhost VARCHAR(64) NULL,
    MODIFY last_fileset VARCHAR(255) NULL,
    MODIFY state VARCHAR(64) NOT NULL DEFAULT 'active';
ALTER TABLE rcDSFileset
    ADD COLUMN fs_id BIGINT NOT NULL AUTO_INCREMENT UNIQUE FIRST,
    ADD COLUMN dist_id BIGINT NULL,
    ADD COLUMN dest_id BIGINT NULL,
    ADD COLUMN registered TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    MODIFY name VARCHAR(255) NOT NULL,
    MODIFY state VARCHAR(64) NOT NULL,
    ADD KEY rcDSFileset_dist (dist_id, dest_id);

-- The IPP's tables its tools join to that this project had none of (pxadmin_create_tables.sql).
CREATE TABLE rcInterest (
    int_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    dest_id BIGINT NULL,
    target_id BIGINT NULL,
    state VARCHAR(64) NULL,
    UNIQUE KEY rcInterest_dest_target (dest_id, target_id)
) ENGINE=InnoDB;

CREATE TABLE rcRun (
    rc_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    fs_id BIGINT NULL,
    dest_id BIGINT NULL,
    state VARCHAR(64) NULL,
    status_fs_name VARCHAR(64) NULL,
    registered TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    fault SMALLINT NULL DEFAULT 0,
    KEY rcRun_fs (fs_id),
    KEY rcRun_dest (dest_id)
) ENGINE=InnoDB;

CREATE TABLE chipMask (label VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE=InnoDB;
CREATE TABLE camMask (label VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE=InnoDB;
CREATE TABLE fakeMask (label VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE=InnoDB;
CREATE TABLE warpMask (label VARCHAR(64) NOT NULL PRIMARY KEY) ENGINE=InnoDB;

CREATE TABLE chipBackgroundRun (
    chip_bg_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    chip_id BIGINT NOT NULL,
    cam_id BIGINT NULL DEFAULT 0,
    state VARCHAR(64) NOT NULL,
    workdir VARCHAR(255) NOT NULL,
    label VARCHAR(64) NULL,
    data_group VARCHAR(64) NULL,
    dist_group VARCHAR(64) NULL,
    reduction VARCHAR(64) NULL,
    note VARCHAR(255) NULL,
    registered TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    magicked BIGINT NOT NULL DEFAULT 0,
    KEY chipBackgroundRun_chip (chip_id),
    KEY chipBackgroundRun_state (state),
    KEY chipBackgroundRun_label (label)
) ENGINE=InnoDB;

CREATE TABLE chipBackgroundImfile (
    chip_bg_id BIGINT NOT NULL,
    class_id VARCHAR(64) NOT NULL,
    path_base VARCHAR(255) NOT NULL,
    magicked BIGINT NULL,
    dtime_script FLOAT NULL,
    hostname VARCHAR(64) NOT NULL,
    quality SMALLINT NOT NULL,
    fault SMALLINT NOT NULL,
    software_ver VARCHAR(16) NULL,
    bg FLOAT NULL,
    bg_stdev FLOAT NULL,
    maskfrac_npix FLOAT NULL,
    maskfrac_static FLOAT NULL,
    maskfrac_dynamic FLOAT NULL,
    maskfrac_magic FLOAT NULL,
    maskfrac_advisory FLOAT NULL,
    PRIMARY KEY (chip_bg_id, class_id),
    CONSTRAINT chipBackgroundImfile_run FOREIGN KEY (chip_bg_id) REFERENCES chipBackgroundRun (chip_bg_id)
) ENGINE=InnoDB;

-- A mirror checks who owns a raw image by its uri (raw rows have no path_base).
ALTER TABLE rawImfile ADD KEY rawImfile_uri (uri);

-- NULL-able where the IPP's columns are and nothing here needs a value (the defaults stay,
-- for rows that leave them out).
ALTER TABLE rawExp MODIFY exp_type VARCHAR(64) NULL DEFAULT 'OBJECT',
    MODIFY filelevel VARCHAR(64) NULL DEFAULT 'CHIP';
ALTER TABLE rawImfile MODIFY camera VARCHAR(64) NULL DEFAULT 'GPC1',
    MODIFY telescope VARCHAR(64) NULL DEFAULT 'PS1';
ALTER TABLE warpRun MODIFY mode VARCHAR(64) NULL DEFAULT 'warp';
ALTER TABLE diffRun MODIFY bothways TINYINT NULL DEFAULT 0, MODIFY exposure TINYINT NULL DEFAULT 0;
ALTER TABLE Label MODIFY priority INT NULL DEFAULT 0;
ALTER TABLE dsProduct MODIFY type VARCHAR(64) NULL;
ALTER TABLE dsFileset MODIFY type VARCHAR(64) NULL DEFAULT 'notset';

-- Targets and sources are 'enabled' as the IPP's disttool has them (its queries select
-- distTarget.state = 'enabled', rcDestination.state = 'enabled'); this project said 'active'.
UPDATE distTarget SET state = 'enabled' WHERE state = 'active';
UPDATE rcDestination SET state = 'enabled' WHERE state = 'active';
ALTER TABLE distTarget ALTER state SET DEFAULT 'enabled';
ALTER TABLE rcDestination ALTER state SET DEFAULT 'enabled';
