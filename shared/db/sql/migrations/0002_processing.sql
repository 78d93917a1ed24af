-- The processing database (IPP "gpc1"): runs and components of every stage (REFERENCE 1).
-- IPP table and column names and types. Every state / data_state must be one of the valid
-- states (CHECK constraints). Indexes serve the agents' pending queries.
-- Foreign keys tie components to their run within a stage; there are none across stages
-- (chipRun -> rawExp, camRun -> chipRun ...), because a mirror imports one stage's export at a
-- time and need not hold the parent runs of other stages.
-- Statements end with ';' at the end of a line (the migration runner splits there).

CREATE TABLE Label (
    label VARCHAR(64) NOT NULL PRIMARY KEY,
    priority INT NOT NULL DEFAULT 0,
    KEY Label_priority (priority)
) ENGINE=InnoDB;

CREATE TABLE rawExp (
    exp_id BIGINT NOT NULL PRIMARY KEY,
    exp_name VARCHAR(64) NOT NULL,
    camera VARCHAR(64) NOT NULL DEFAULT 'GPC1',
    telescope VARCHAR(64) NOT NULL DEFAULT 'PS1',
    dateobs DATETIME NOT NULL,
    exp_tag VARCHAR(255),
    exp_type VARCHAR(64) NOT NULL DEFAULT 'OBJECT',
    filelevel VARCHAR(64) NOT NULL DEFAULT 'CHIP',
    workdir VARCHAR(255),
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    tess_id VARCHAR(64),
    end_stage VARCHAR(64),
    filter VARCHAR(64),
    comment VARCHAR(80),
    obs_mode VARCHAR(64),
    airmass FLOAT,
    ra DOUBLE,
    decl DOUBLE,
    exp_time FLOAT,
    bg DOUBLE,
    bg_stdev DOUBLE,
    alt DOUBLE,
    az DOUBLE,
    posang DOUBLE,
    object VARCHAR(64),
    hostname VARCHAR(64),
    fault SMALLINT NOT NULL DEFAULT 0,
    epoch TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    magicked BIGINT NOT NULL DEFAULT 0,
    UNIQUE KEY rawExp_exp_name (exp_name, camera, telescope),
    KEY rawExp_state (state),
    CONSTRAINT rawExp_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE rawImfile (
    exp_id BIGINT NOT NULL,
    exp_name VARCHAR(64) NOT NULL,
    camera VARCHAR(64) NOT NULL DEFAULT 'GPC1',
    telescope VARCHAR(64) NOT NULL DEFAULT 'PS1',
    dateobs DATETIME,
    tmp_class_id VARCHAR(64),
    class_id VARCHAR(64) NOT NULL,
    uri VARCHAR(255),
    data_state VARCHAR(64) NOT NULL DEFAULT 'new',
    exp_type VARCHAR(64),
    filelevel VARCHAR(64),
    filter VARCHAR(64),
    airmass FLOAT,
    ra DOUBLE,
    decl DOUBLE,
    exp_time FLOAT,
    bg DOUBLE,
    bg_stdev DOUBLE,
    hostname VARCHAR(64),
    quality SMALLINT NOT NULL DEFAULT 0,
    fault SMALLINT NOT NULL DEFAULT 0,
    epoch TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    raw_image_id BIGINT NOT NULL AUTO_INCREMENT,
    magicked BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT,
    md5sum VARCHAR(32),
    PRIMARY KEY (exp_id, class_id),
    UNIQUE KEY rawImfile_raw_image_id (raw_image_id),
    KEY rawImfile_data_state (data_state),
    CONSTRAINT rawImfile_exp FOREIGN KEY (exp_id) REFERENCES rawExp (exp_id),
    CONSTRAINT rawImfile_data_state_valid CHECK (data_state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE chipRun (
    chip_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    exp_id BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    workdir_state VARCHAR(64),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    tess_id VARCHAR(64),
    end_stage VARCHAR(64),
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    note VARCHAR(255),
    registered DATETIME,
    expgroup VARCHAR(64),
    maskfrac_npix FLOAT,
    update_mode SMALLINT DEFAULT 0,
    KEY chipRun_state_label (state, label, chip_id),
    KEY chipRun_label (label),
    KEY chipRun_data_group (data_group),
    KEY chipRun_dist_group (dist_group),
    KEY chipRun_exp (exp_id),
    CONSTRAINT chipRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE chipImfile (
    chip_id BIGINT NOT NULL,
    class_id VARCHAR(64) NOT NULL,
    chip_imfile_id BIGINT NOT NULL AUTO_INCREMENT,
    PRIMARY KEY (chip_id, class_id),
    UNIQUE KEY chipImfile_id (chip_imfile_id),
    CONSTRAINT chipImfile_run FOREIGN KEY (chip_id) REFERENCES chipRun (chip_id)
) ENGINE=InnoDB;

CREATE TABLE chipProcessedImfile (
    chip_id BIGINT NOT NULL,
    exp_id BIGINT NOT NULL,
    class_id VARCHAR(64) NOT NULL,
    data_state VARCHAR(64) NOT NULL DEFAULT 'new',
    uri VARCHAR(255),
    bg FLOAT,
    bg_stdev FLOAT,
    bg_mean_stdev FLOAT,
    bias FLOAT,
    bias_stdev FLOAT,
    fwhm_major FLOAT,
    fwhm_minor FLOAT,
    dtime_detrend FLOAT,
    dtime_photom FLOAT,
    dtime_total FLOAT,
    hostname VARCHAR(64),
    n_stars INT,
    n_psfstars INT,
    n_extended INT,
    n_cr INT,
    path_base VARCHAR(255),
    quality SMALLINT NOT NULL DEFAULT 0,
    fault SMALLINT NOT NULL DEFAULT 0,
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    maskfrac_npix INT,
    deteff_magref FLOAT,
    PRIMARY KEY (chip_id, exp_id, class_id),
    KEY chipProcessedImfile_state (chip_id, data_state),
    CONSTRAINT chipProcessedImfile_run FOREIGN KEY (chip_id) REFERENCES chipRun (chip_id),
    CONSTRAINT chipProcessedImfile_data_state_valid CHECK (data_state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE camRun (
    cam_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    chip_id BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    workdir_state VARCHAR(64),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    tess_id VARCHAR(64),
    end_stage VARCHAR(64),
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    note VARCHAR(255),
    registered DATETIME,
    expgroup VARCHAR(64),
    KEY camRun_state_label (state, label, cam_id),
    KEY camRun_label (label),
    KEY camRun_data_group (data_group),
    KEY camRun_dist_group (dist_group),
    KEY camRun_chip (chip_id),
    CONSTRAINT camRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE camProcessedExp (
    cam_id BIGINT NOT NULL PRIMARY KEY,
    uri VARCHAR(255),
    bg FLOAT,
    bg_stdev FLOAT,
    sigma_ra FLOAT,
    sigma_dec FLOAT,
    zpt_obs FLOAT,
    zpt_stdev FLOAT,
    fwhm_major FLOAT,
    fwhm_minor FLOAT,
    dtime_script FLOAT,
    dtime_astrom FLOAT,
    hostname VARCHAR(64),
    n_stars INT,
    n_astrom INT,
    path_base VARCHAR(255),
    fault SMALLINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    quality SMALLINT NOT NULL DEFAULT 0,
    CONSTRAINT camProcessedExp_run FOREIGN KEY (cam_id) REFERENCES camRun (cam_id)
) ENGINE=InnoDB;

CREATE TABLE warpRun (
    warp_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    fake_id BIGINT,
    cam_id BIGINT NOT NULL,
    mode VARCHAR(64) NOT NULL DEFAULT 'warp',
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    workdir_state VARCHAR(64),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    tess_id VARCHAR(64),
    end_stage VARCHAR(64),
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    note VARCHAR(255),
    registered DATETIME,
    KEY warpRun_state_label (state, label, warp_id),
    KEY warpRun_label (label),
    KEY warpRun_data_group (data_group),
    KEY warpRun_dist_group (dist_group),
    KEY warpRun_cam (cam_id),
    CONSTRAINT warpRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE warpSkyCellMap (
    warp_id BIGINT NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    tess_id VARCHAR(64) NOT NULL,
    class_id VARCHAR(64) NOT NULL,
    fault SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (warp_id, skycell_id, tess_id, class_id),
    CONSTRAINT warpSkyCellMap_run FOREIGN KEY (warp_id) REFERENCES warpRun (warp_id)
) ENGINE=InnoDB;

CREATE TABLE warpImfile (
    warp_id BIGINT NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    warp_skyfile_id BIGINT NOT NULL AUTO_INCREMENT,
    PRIMARY KEY (warp_id, skycell_id),
    UNIQUE KEY warpImfile_id (warp_skyfile_id),
    CONSTRAINT warpImfile_run FOREIGN KEY (warp_id) REFERENCES warpRun (warp_id)
) ENGINE=InnoDB;

CREATE TABLE warpSkyfile (
    warp_id BIGINT NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    tess_id VARCHAR(64) NOT NULL,
    uri VARCHAR(255),
    path_base VARCHAR(255),
    data_state VARCHAR(64) NOT NULL DEFAULT 'new',
    bg DOUBLE,
    bg_stdev DOUBLE,
    dtime_warp FLOAT,
    hostname VARCHAR(64),
    good_frac FLOAT,
    quality SMALLINT NOT NULL DEFAULT 0,
    fault SMALLINT NOT NULL DEFAULT 0,
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    PRIMARY KEY (warp_id, skycell_id, tess_id),
    KEY warpSkyfile_state (warp_id, data_state),
    CONSTRAINT warpSkyfile_run FOREIGN KEY (warp_id) REFERENCES warpRun (warp_id),
    CONSTRAINT warpSkyfile_data_state_valid CHECK (data_state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE stackRun (
    stack_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    registered DATETIME,
    skycell_id VARCHAR(64) NOT NULL,
    tess_id VARCHAR(64) NOT NULL,
    filter VARCHAR(64),
    software_ver VARCHAR(16),
    note VARCHAR(255),
    KEY stackRun_state_label (state, label, stack_id),
    KEY stackRun_label (label),
    KEY stackRun_data_group (data_group),
    KEY stackRun_dist_group (dist_group),
    KEY stackRun_skycell (skycell_id, tess_id),
    CONSTRAINT stackRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE stackInputSkyfile (
    stack_id BIGINT NOT NULL,
    warp_id BIGINT NOT NULL,
    PRIMARY KEY (stack_id, warp_id),
    KEY stackInputSkyfile_warp (warp_id),
    CONSTRAINT stackInputSkyfile_run FOREIGN KEY (stack_id) REFERENCES stackRun (stack_id)
) ENGINE=InnoDB;

CREATE TABLE stackSumSkyfile (
    stack_id BIGINT NOT NULL PRIMARY KEY,
    uri VARCHAR(255),
    path_base VARCHAR(255),
    bg DOUBLE,
    bg_stdev DOUBLE,
    dtime_stack FLOAT,
    sources INT,
    hostname VARCHAR(64),
    good_frac FLOAT,
    mjd_obs DOUBLE,
    fault SMALLINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    quality SMALLINT NOT NULL DEFAULT 0,
    CONSTRAINT stackSumSkyfile_run FOREIGN KEY (stack_id) REFERENCES stackRun (stack_id)
) ENGINE=InnoDB;

CREATE TABLE diffRun (
    diff_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    dvodb VARCHAR(255),
    registered DATETIME,
    tess_id VARCHAR(64),
    bothways TINYINT NOT NULL DEFAULT 0,
    exposure TINYINT NOT NULL DEFAULT 0,
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    diff_mode SMALLINT NOT NULL DEFAULT 0,
    note VARCHAR(255),
    KEY diffRun_state_label (state, label, diff_id),
    KEY diffRun_label (label),
    KEY diffRun_data_group (data_group),
    KEY diffRun_dist_group (dist_group),
    CONSTRAINT diffRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE diffInputSkyfile (
    diff_id BIGINT NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    warp1 BIGINT,
    stack1 BIGINT,
    warp2 BIGINT,
    stack2 BIGINT,
    tess_id VARCHAR(64),
    diff_skyfile_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    KEY diffInputSkyfile_run (diff_id, skycell_id),
    KEY diffInputSkyfile_warp1 (warp1),
    KEY diffInputSkyfile_warp2 (warp2),
    KEY diffInputSkyfile_stack1 (stack1),
    KEY diffInputSkyfile_stack2 (stack2),
    CONSTRAINT diffInputSkyfile_diff FOREIGN KEY (diff_id) REFERENCES diffRun (diff_id)
) ENGINE=InnoDB;

CREATE TABLE diffSkyfile (
    diff_id BIGINT NOT NULL,
    skycell_id VARCHAR(64) NOT NULL,
    path_base VARCHAR(255),
    data_state VARCHAR(64) NOT NULL DEFAULT 'new',
    bg DOUBLE,
    bg_stdev DOUBLE,
    sources INT,
    dtime_diff FLOAT,
    hostname VARCHAR(64),
    good_frac FLOAT,
    quality SMALLINT NOT NULL DEFAULT 0,
    fault SMALLINT NOT NULL DEFAULT 0,
    magicked BIGINT NOT NULL DEFAULT 0,
    software_ver VARCHAR(16),
    PRIMARY KEY (diff_id, skycell_id),
    KEY diffSkyfile_state (diff_id, data_state),
    CONSTRAINT diffSkyfile_run FOREIGN KEY (diff_id) REFERENCES diffRun (diff_id),
    CONSTRAINT diffSkyfile_data_state_valid CHECK (data_state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE magicRun (
    magic_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    exp_id BIGINT,
    diff_id BIGINT,
    inverse TINYINT NOT NULL DEFAULT 0,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    label VARCHAR(64),
    data_group VARCHAR(64),
    registered DATETIME,
    fault SMALLINT NOT NULL DEFAULT 0,
    note VARCHAR(255),
    KEY magicRun_exp (exp_id),
    KEY magicRun_state (state),
    CONSTRAINT magicRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE magicDSRun (
    magic_ds_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    magic_id BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    stage VARCHAR(64) NOT NULL,
    stage_id BIGINT NOT NULL,
    cam_id BIGINT,
    label VARCHAR(64),
    data_group VARCHAR(64),
    outroot VARCHAR(255),
    recoveryroot VARCHAR(255),
    fault SMALLINT NOT NULL DEFAULT 0,
    note VARCHAR(255),
    KEY magicDSRun_stage (stage, stage_id),
    KEY magicDSRun_state (state),
    CONSTRAINT magicDSRun_magic FOREIGN KEY (magic_id) REFERENCES magicRun (magic_id),
    CONSTRAINT magicDSRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE magicDSFile (
    magic_ds_id BIGINT NOT NULL,
    component VARCHAR(64) NOT NULL,
    backup_path_base VARCHAR(255),
    recovery_path_base VARCHAR(255),
    streak_frac FLOAT,
    fault SMALLINT NOT NULL DEFAULT 0,
    data_state VARCHAR(64) NOT NULL DEFAULT 'new',
    PRIMARY KEY (magic_ds_id, component),
    CONSTRAINT magicDSFile_run FOREIGN KEY (magic_ds_id) REFERENCES magicDSRun (magic_ds_id),
    CONSTRAINT magicDSFile_data_state_valid CHECK (data_state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE addRun (
    add_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    stage VARCHAR(64) NOT NULL,
    stage_id BIGINT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    reduction VARCHAR(64),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dvodb VARCHAR(255),
    note VARCHAR(255),
    KEY addRun_stage (stage, stage_id),
    KEY addRun_dvodb (dvodb, state),
    CONSTRAINT addRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;
