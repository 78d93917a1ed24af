-- The real gpc1 columns (issue 18): every column the IPP's own tables have, with its IPP name
-- and type, so that this schema can hold a copy of a real gpc1 database and the IPP's own
-- queries (ippTools/share/*.sql) run on it unchanged. The facts come from the IPP's
-- ippTools/share/pxadmin_create_tables.sql and are listed in
-- tests/corpus/ipp_schema/gpc1_columns.txt, which test_ipp_conformance checks against this
-- schema. Added columns are NULL-able with the IPP's defaults; nothing in this project writes
-- them except a run import, which carries them from the site that made the run.

-- Widened to the IPP's widths: a value the IPP writes must fit.
ALTER TABLE distTarget MODIFY COLUMN stage VARCHAR(64) NOT NULL, MODIFY COLUMN state VARCHAR(64) NOT NULL DEFAULT 'active';
ALTER TABLE distRun MODIFY COLUMN stage VARCHAR(64) NOT NULL, MODIFY COLUMN state VARCHAR(64) NOT NULL DEFAULT 'new';
ALTER TABLE distComponent MODIFY COLUMN state VARCHAR(64) NOT NULL DEFAULT 'new';

ALTER TABLE rawExp
    ADD COLUMN obs_group VARCHAR(64) NULL,
    ADD COLUMN sat_pixel_frac FLOAT NULL,
    ADD COLUMN bg_mean_stdev DOUBLE NULL,
    ADD COLUMN ccd_temp FLOAT NULL,
    ADD COLUMN m1_x FLOAT NULL,
    ADD COLUMN m1_y FLOAT NULL,
    ADD COLUMN m1_z FLOAT NULL,
    ADD COLUMN m1_tip FLOAT NULL,
    ADD COLUMN m1_tilt FLOAT NULL,
    ADD COLUMN m2_x FLOAT NULL,
    ADD COLUMN m2_y FLOAT NULL,
    ADD COLUMN m2_z FLOAT NULL,
    ADD COLUMN m2_tip FLOAT NULL,
    ADD COLUMN m2_tilt FLOAT NULL,
    ADD COLUMN env_temperature FLOAT NULL,
    ADD COLUMN env_humidity FLOAT NULL,
    ADD COLUMN env_wind_speed FLOAT NULL,
    ADD COLUMN env_wind_dir FLOAT NULL,
    ADD COLUMN teltemp_m1 FLOAT NULL,
    ADD COLUMN teltemp_m1cell FLOAT NULL,
    ADD COLUMN teltemp_m2 FLOAT NULL,
    ADD COLUMN teltemp_spider FLOAT NULL,
    ADD COLUMN teltemp_truss FLOAT NULL,
    ADD COLUMN teltemp_extra FLOAT NULL,
    ADD COLUMN pon_time FLOAT NULL,
    ADD COLUMN user_1 DOUBLE NULL,
    ADD COLUMN user_2 DOUBLE NULL,
    ADD COLUMN user_3 DOUBLE NULL,
    ADD COLUMN user_4 DOUBLE NULL,
    ADD COLUMN user_5 DOUBLE NULL,
    ADD COLUMN sun_angle FLOAT NULL,
    ADD COLUMN sun_alt FLOAT NULL,
    ADD COLUMN moon_angle FLOAT NULL,
    ADD COLUMN moon_alt FLOAT NULL,
    ADD COLUMN moon_phase FLOAT NULL;

ALTER TABLE rawImfile
    ADD COLUMN comment VARCHAR(80) NULL,
    ADD COLUMN obs_mode VARCHAR(64) NULL,
    ADD COLUMN obs_group VARCHAR(64) NULL,
    ADD COLUMN sat_pixel_frac FLOAT NULL,
    ADD COLUMN bg_mean_stdev DOUBLE NULL,
    ADD COLUMN alt DOUBLE NULL,
    ADD COLUMN az DOUBLE NULL,
    ADD COLUMN ccd_temp FLOAT NULL,
    ADD COLUMN posang DOUBLE NULL,
    ADD COLUMN m1_x FLOAT NULL,
    ADD COLUMN m1_y FLOAT NULL,
    ADD COLUMN m1_z FLOAT NULL,
    ADD COLUMN m1_tip FLOAT NULL,
    ADD COLUMN m1_tilt FLOAT NULL,
    ADD COLUMN m2_x FLOAT NULL,
    ADD COLUMN m2_y FLOAT NULL,
    ADD COLUMN m2_z FLOAT NULL,
    ADD COLUMN m2_tip FLOAT NULL,
    ADD COLUMN m2_tilt FLOAT NULL,
    ADD COLUMN env_temperature FLOAT NULL,
    ADD COLUMN env_humidity FLOAT NULL,
    ADD COLUMN env_wind_speed FLOAT NULL,
    ADD COLUMN env_wind_dir FLOAT NULL,
    ADD COLUMN teltemp_m1 FLOAT NULL,
    ADD COLUMN teltemp_m1cell FLOAT NULL,
    ADD COLUMN teltemp_m2 FLOAT NULL,
    ADD COLUMN teltemp_spider FLOAT NULL,
    ADD COLUMN teltemp_truss FLOAT NULL,
    ADD COLUMN teltemp_extra FLOAT NULL,
    ADD COLUMN pon_time FLOAT NULL,
    ADD COLUMN user_1 DOUBLE NULL,
    ADD COLUMN user_2 DOUBLE NULL,
    ADD COLUMN user_3 DOUBLE NULL,
    ADD COLUMN user_4 DOUBLE NULL,
    ADD COLUMN user_5 DOUBLE NULL,
    ADD COLUMN object VARCHAR(64) NULL,
    ADD COLUMN sun_angle FLOAT NULL,
    ADD COLUMN sun_alt FLOAT NULL,
    ADD COLUMN moon_angle FLOAT NULL,
    ADD COLUMN moon_alt FLOAT NULL,
    ADD COLUMN moon_phase FLOAT NULL,
    ADD COLUMN ignored TINYINT DEFAULT 0,
    ADD COLUMN burntool_state SMALLINT NULL,
    ADD COLUMN video_cells TINYINT DEFAULT 0;

ALTER TABLE chipRun
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL;

ALTER TABLE chipProcessedImfile
    ADD COLUMN fringe_0 FLOAT NULL,
    ADD COLUMN fringe_1 FLOAT NULL,
    ADD COLUMN fringe_2 FLOAT NULL,
    ADD COLUMN ap_resid FLOAT NULL,
    ADD COLUMN ap_resid_stdev FLOAT NULL,
    ADD COLUMN fwhm_major_lq FLOAT NULL,
    ADD COLUMN fwhm_major_uq FLOAT NULL,
    ADD COLUMN fwhm_minor_lq FLOAT NULL,
    ADD COLUMN fwhm_minor_uq FLOAT NULL,
    ADD COLUMN iq_fwhm_major FLOAT NULL,
    ADD COLUMN iq_fwhm_major_err FLOAT NULL,
    ADD COLUMN iq_fwhm_minor FLOAT NULL,
    ADD COLUMN iq_fwhm_minor_err FLOAT NULL,
    ADD COLUMN iq_m2 FLOAT NULL,
    ADD COLUMN iq_m2_err FLOAT NULL,
    ADD COLUMN iq_m2_lq FLOAT NULL,
    ADD COLUMN iq_m2_uq FLOAT NULL,
    ADD COLUMN iq_m2c FLOAT NULL,
    ADD COLUMN iq_m2c_err FLOAT NULL,
    ADD COLUMN iq_m2c_lq FLOAT NULL,
    ADD COLUMN iq_m2c_uq FLOAT NULL,
    ADD COLUMN iq_m2s FLOAT NULL,
    ADD COLUMN iq_m2s_err FLOAT NULL,
    ADD COLUMN iq_m2s_lq FLOAT NULL,
    ADD COLUMN iq_m2s_uq FLOAT NULL,
    ADD COLUMN iq_m3 FLOAT NULL,
    ADD COLUMN iq_m3_err FLOAT NULL,
    ADD COLUMN iq_m3_lq FLOAT NULL,
    ADD COLUMN iq_m3_uq FLOAT NULL,
    ADD COLUMN iq_m4 FLOAT NULL,
    ADD COLUMN iq_m4_err FLOAT NULL,
    ADD COLUMN iq_m4_lq FLOAT NULL,
    ADD COLUMN iq_m4_uq FLOAT NULL,
    ADD COLUMN dtime_script FLOAT NULL,
    ADD COLUMN n_iqstars INT NULL,
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL;

ALTER TABLE camRun
    ADD COLUMN maskfrac_ref_npix FLOAT NULL,
    ADD COLUMN maskfrac_ref_static FLOAT NULL,
    ADD COLUMN maskfrac_ref_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_ref_magic FLOAT NULL,
    ADD COLUMN maskfrac_ref_advisory FLOAT NULL,
    ADD COLUMN maskfrac_max_npix FLOAT NULL,
    ADD COLUMN maskfrac_max_static FLOAT NULL,
    ADD COLUMN maskfrac_max_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_max_magic FLOAT NULL,
    ADD COLUMN maskfrac_max_advisory FLOAT NULL;

ALTER TABLE camProcessedExp
    ADD COLUMN bg_mean_stdev FLOAT NULL,
    ADD COLUMN bias FLOAT NULL,
    ADD COLUMN bias_stdev FLOAT NULL,
    ADD COLUMN fringe_0 FLOAT NULL,
    ADD COLUMN fringe_1 FLOAT NULL,
    ADD COLUMN fringe_2 FLOAT NULL,
    ADD COLUMN ap_resid FLOAT NULL,
    ADD COLUMN ap_resid_stdev FLOAT NULL,
    ADD COLUMN zpt_lq FLOAT NULL,
    ADD COLUMN zpt_uq FLOAT NULL,
    ADD COLUMN fwhm_major_lq FLOAT NULL,
    ADD COLUMN fwhm_major_uq FLOAT NULL,
    ADD COLUMN fwhm_minor_lq FLOAT NULL,
    ADD COLUMN fwhm_minor_uq FLOAT NULL,
    ADD COLUMN iq_fwhm_major FLOAT NULL,
    ADD COLUMN iq_fwhm_major_err FLOAT NULL,
    ADD COLUMN iq_fwhm_minor FLOAT NULL,
    ADD COLUMN iq_fwhm_minor_err FLOAT NULL,
    ADD COLUMN iq_m2 FLOAT NULL,
    ADD COLUMN iq_m2_err FLOAT NULL,
    ADD COLUMN iq_m2_lq FLOAT NULL,
    ADD COLUMN iq_m2_uq FLOAT NULL,
    ADD COLUMN iq_m2c FLOAT NULL,
    ADD COLUMN iq_m2c_err FLOAT NULL,
    ADD COLUMN iq_m2c_lq FLOAT NULL,
    ADD COLUMN iq_m2c_uq FLOAT NULL,
    ADD COLUMN iq_m2s FLOAT NULL,
    ADD COLUMN iq_m2s_err FLOAT NULL,
    ADD COLUMN iq_m2s_lq FLOAT NULL,
    ADD COLUMN iq_m2s_uq FLOAT NULL,
    ADD COLUMN iq_m3 FLOAT NULL,
    ADD COLUMN iq_m3_err FLOAT NULL,
    ADD COLUMN iq_m3_lq FLOAT NULL,
    ADD COLUMN iq_m3_uq FLOAT NULL,
    ADD COLUMN iq_m4 FLOAT NULL,
    ADD COLUMN iq_m4_err FLOAT NULL,
    ADD COLUMN iq_m4_lq FLOAT NULL,
    ADD COLUMN iq_m4_uq FLOAT NULL,
    ADD COLUMN dtime_addstar FLOAT NULL,
    ADD COLUMN n_psfstars INT NULL,
    ADD COLUMN n_iqstars INT NULL,
    ADD COLUMN n_extended INT NULL,
    ADD COLUMN n_cr INT NULL,
    ADD COLUMN maskfrac_ref_npix INT NULL,
    ADD COLUMN maskfrac_ref_static FLOAT NULL,
    ADD COLUMN maskfrac_ref_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_ref_magic FLOAT NULL,
    ADD COLUMN maskfrac_ref_advisory FLOAT NULL,
    ADD COLUMN maskfrac_max_npix INT NULL,
    ADD COLUMN maskfrac_max_static FLOAT NULL,
    ADD COLUMN maskfrac_max_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_max_magic FLOAT NULL,
    ADD COLUMN maskfrac_max_advisory FLOAT NULL,
    ADD COLUMN deteff FLOAT NULL,
    ADD COLUMN deteff_err FLOAT NULL,
    ADD COLUMN deteff_lq FLOAT NULL,
    ADD COLUMN deteff_uq FLOAT NULL,
    ADD COLUMN background_model SMALLINT NULL,
    ADD COLUMN astrom_chips BIGINT NULL,
    ADD COLUMN ast_r0 FLOAT NULL,
    ADD COLUMN ast_d0 FLOAT NULL,
    ADD COLUMN ast_t0 FLOAT NULL,
    ADD COLUMN ast_s0 FLOAT NULL,
    ADD COLUMN ast_rs FLOAT NULL,
    ADD COLUMN ast_ds FLOAT NULL;

ALTER TABLE addRun
    ADD COLUMN stage_extra1 INT NULL,
    ADD COLUMN workdir_state VARCHAR(64) NULL,
    ADD COLUMN image_only TINYINT NULL,
    ADD COLUMN minidvodb TINYINT NULL,
    ADD COLUMN minidvodb_group VARCHAR(64) NULL,
    ADD COLUMN minidvodb_name VARCHAR(64) NULL;

ALTER TABLE warpRun
    ADD COLUMN maskfrac_npix FLOAT NULL,
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL;

ALTER TABLE warpSkyfile
    ADD COLUMN dtime_script FLOAT NULL,
    ADD COLUMN xmin INT NULL,
    ADD COLUMN xmax INT NULL,
    ADD COLUMN ymin INT NULL,
    ADD COLUMN ymax INT NULL,
    ADD COLUMN maskfrac_npix INT NULL,
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL,
    ADD COLUMN background_model SMALLINT NULL;

ALTER TABLE stackSumSkyfile
    ADD COLUMN dtime_match_mean FLOAT NULL,
    ADD COLUMN dtime_match_stdev FLOAT NULL,
    ADD COLUMN dtime_convolve FLOAT NULL,
    ADD COLUMN dtime_initial FLOAT NULL,
    ADD COLUMN dtime_reject FLOAT NULL,
    ADD COLUMN dtime_final FLOAT NULL,
    ADD COLUMN dtime_phot FLOAT NULL,
    ADD COLUMN dtime_script FLOAT NULL,
    ADD COLUMN match_mean FLOAT NULL,
    ADD COLUMN match_stdev FLOAT NULL,
    ADD COLUMN match_rms FLOAT NULL,
    ADD COLUMN stamps_mean FLOAT NULL,
    ADD COLUMN stamps_stdev FLOAT NULL,
    ADD COLUMN stamps_min INT NULL,
    ADD COLUMN reject_images INT NULL,
    ADD COLUMN reject_pix_mean FLOAT NULL,
    ADD COLUMN reject_pix_stdev FLOAT NULL,
    ADD COLUMN background_model SMALLINT NULL;

ALTER TABLE diffRun
    ADD COLUMN maskfrac_npix FLOAT NULL,
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL;

ALTER TABLE diffSkyfile
    ADD COLUMN stamps_num INT NULL,
    ADD COLUMN stamps_mean FLOAT NULL,
    ADD COLUMN stamps_rms FLOAT NULL,
    ADD COLUMN norm FLOAT NULL,
    ADD COLUMN bg_diff FLOAT NULL,
    ADD COLUMN kernel_x FLOAT NULL,
    ADD COLUMN kernel_y FLOAT NULL,
    ADD COLUMN kernel_xx FLOAT NULL,
    ADD COLUMN kernel_xy FLOAT NULL,
    ADD COLUMN kernel_yy FLOAT NULL,
    ADD COLUMN deconv_max FLOAT NULL,
    ADD COLUMN dtime_match FLOAT NULL,
    ADD COLUMN dtime_phot FLOAT NULL,
    ADD COLUMN dtime_script FLOAT NULL,
    ADD COLUMN maskfrac_npix INT NULL,
    ADD COLUMN maskfrac_static FLOAT NULL,
    ADD COLUMN maskfrac_dynamic FLOAT NULL,
    ADD COLUMN maskfrac_magic FLOAT NULL,
    ADD COLUMN maskfrac_advisory FLOAT NULL;

ALTER TABLE magicRun
    ADD COLUMN workdir_state VARCHAR(255) NULL,
    ADD COLUMN dvodb VARCHAR(255) NULL;

ALTER TABLE magicDSRun
    ADD COLUMN inv_magic_id BIGINT NULL,
    ADD COLUMN re_place TINYINT NULL,
    ADD COLUMN remove TINYINT NULL;

ALTER TABLE magicDSFile
    ADD COLUMN nondiff_frac FLOAT NULL,
    ADD COLUMN run_time FLOAT NULL;

ALTER TABLE distTarget
    ADD COLUMN comment VARCHAR(255) NULL;

ALTER TABLE distRun
    ADD COLUMN magic_ds_id BIGINT NULL,
    ADD COLUMN outdir VARCHAR(255) NULL,
    ADD COLUMN no_magic TINYINT NULL,
    ADD COLUMN alternate TINYINT NULL,
    ADD COLUMN time_stamp TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN data_group VARCHAR(64) NULL;

ALTER TABLE distComponent
    ADD COLUMN outdir VARCHAR(255) NULL;

-- The fake stage (seed 002: raw, chip, camera, fake, warp, diff). Runs of it are imported
-- and shipped like the other stages; no agent of this project processes or cleans them.
CREATE TABLE fakeRun (
    fake_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cam_id BIGINT,
    state VARCHAR(64) NOT NULL DEFAULT 'new',
    workdir VARCHAR(255),
    label VARCHAR(64),
    data_group VARCHAR(64),
    dist_group VARCHAR(64),
    reduction VARCHAR(64),
    expgroup VARCHAR(64),
    dvodb VARCHAR(255),
    tess_id VARCHAR(64),
    end_stage VARCHAR(64),
    epoch TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    note VARCHAR(255),
    KEY fakeRun_cam (cam_id),
    KEY fakeRun_state (state),
    KEY fakeRun_label (label),
    CONSTRAINT fakeRun_state_valid CHECK (state IN ('new', 'reg', 'full', 'drop', 'wait', 'keep', 'ignore', 'goto_cleaned', 'error_cleaned', 'goto_purged', 'error_purged', 'goto_scrubbed', 'error_scrubbed', 'cleaned', 'update', 'purged', 'scrubbed'))
) ENGINE=InnoDB;

CREATE TABLE fakeProcessedImfile (
    fake_id BIGINT NOT NULL,
    exp_id BIGINT NOT NULL,
    class_id VARCHAR(64) NOT NULL,
    uri VARCHAR(255),
    dtime_fake FLOAT,
    dtime_script FLOAT,
    hostname VARCHAR(64),
    path_base VARCHAR(255),
    data_state VARCHAR(64),
    fault SMALLINT NOT NULL DEFAULT 0,
    epoch TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (fake_id, exp_id, class_id),
    KEY fakeProcessedImfile_path_base (path_base),
    CONSTRAINT fakeProcessedImfile_run FOREIGN KEY (fake_id) REFERENCES fakeRun (fake_id)
) ENGINE=InnoDB;
