-- Rows written by the synthetic survey generator (sim.survey).

-- name: next_exp_id
SELECT COALESCE(MAX(exp_id), 0) + 1 AS next_id FROM rawExp;

-- name: upsert_label
INSERT INTO Label (label, priority) VALUES (%(label)s, %(priority)s)
ON DUPLICATE KEY UPDATE priority = VALUES(priority);

-- name: insert_rawExp
INSERT INTO rawExp (exp_id, exp_name, dateobs, exp_tag, workdir, state, filter, airmass, ra,
                    decl, exp_time, object, magicked, fault, reduction, tess_id, end_stage)
VALUES (%(exp_id)s, %(exp_name)s, %(dateobs)s, %(exp_tag)s, %(workdir)s, 'full', %(filter)s,
        %(airmass)s, %(ra)s, %(decl)s, %(exp_time)s, %(object)s, 0, 0, 'DEFAULT', %(tess_id)s,
        'diff');

-- name: insert_rawImfile
INSERT INTO rawImfile (exp_id, exp_name, dateobs, class_id, tmp_class_id, uri, data_state,
                       exp_type, filelevel, filter, airmass, ra, decl, exp_time, bytes, md5sum)
VALUES (%(exp_id)s, %(exp_name)s, %(dateobs)s, %(class_id)s, %(class_id)s, %(uri)s, 'full',
        'OBJECT', 'CHIP', %(filter)s, %(airmass)s, %(ra)s, %(decl)s, %(exp_time)s, %(bytes)s,
        %(md5sum)s);

-- name: insert_magicRun
INSERT INTO magicRun (exp_id, state, workdir, label, registered)
VALUES (%(exp_id)s, 'full', %(workdir)s, %(label)s, %(registered)s);

-- name: insert_magicDSRun
INSERT INTO magicDSRun (magic_id, state, stage, stage_id, cam_id, label, outroot, recoveryroot)
VALUES (%(magic_id)s, 'full', %(stage)s, %(stage_id)s, %(cam_id)s, %(label)s, %(outroot)s,
        %(recoveryroot)s);

-- name: insert_magicDSFile
INSERT INTO magicDSFile (magic_ds_id, component, backup_path_base, recovery_path_base,
                         streak_frac, data_state)
VALUES (%(magic_ds_id)s, %(component)s, %(backup_path_base)s, %(recovery_path_base)s,
        %(streak_frac)s, 'full');

-- name: insert_chipRun
INSERT INTO chipRun (exp_id, state, workdir, label, data_group, dist_group, reduction, dvodb,
                     tess_id, end_stage, magicked, software_ver, registered)
VALUES (%(exp_id)s, 'new', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s, 'DEFAULT',
        %(dvodb)s, %(tess_id)s, 'diff', %(magicked)s, %(software_ver)s, %(registered)s);

-- name: insert_chipImfile
INSERT INTO chipImfile (chip_id, class_id) VALUES (%(chip_id)s, %(class_id)s);

-- name: insert_chipProcessedImfile
INSERT INTO chipProcessedImfile (chip_id, exp_id, class_id, data_state, uri, bg, bg_stdev,
                                 fwhm_major, fwhm_minor, hostname, n_stars, path_base, quality,
                                 fault, magicked, software_ver, deteff_magref)
VALUES (%(chip_id)s, %(exp_id)s, %(class_id)s, 'full', %(uri)s, %(bg)s, %(bg_stdev)s,
        %(fwhm)s, %(fwhm)s, 'refproc', %(n_stars)s, %(path_base)s, 0, 0, %(magicked)s,
        %(software_ver)s, 21.5);

-- name: set_chipRun_full
UPDATE chipRun SET state = 'full' WHERE chip_id = %(id)s;

-- name: insert_camRun
INSERT INTO camRun (chip_id, state, workdir, label, data_group, dist_group, reduction, dvodb,
                    tess_id, end_stage, magicked, software_ver, registered)
VALUES (%(chip_id)s, 'new', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s,
        'DEFAULT', %(dvodb)s, %(tess_id)s, 'diff', %(magicked)s, %(software_ver)s, %(registered)s);

-- name: insert_camProcessedExp
INSERT INTO camProcessedExp (cam_id, uri, bg, zpt_obs, zpt_stdev, fwhm_major, fwhm_minor,
                             hostname, n_stars, n_astrom, path_base, fault, software_ver,
                             quality)
VALUES (%(cam_id)s, %(uri)s, %(bg)s, %(zpt_obs)s, 0.02, %(fwhm)s, %(fwhm)s, 'refproc',
        %(n_stars)s, %(n_stars)s, %(path_base)s, 0, %(software_ver)s, 0);

-- name: set_camRun_full
UPDATE camRun SET state = 'full' WHERE cam_id = %(id)s;

-- name: insert_addRun
INSERT INTO addRun (stage, stage_id, state, workdir, reduction, label, data_group, dvodb)
VALUES ('camera', %(cam_id)s, 'full', %(workdir)s, 'DEFAULT', %(label)s, %(data_group)s,
        %(dvodb)s);

-- name: insert_addRun_stack
-- A stack merged into the survey's DVO database (addtool's stage 'stack').
INSERT INTO addRun (stage, stage_id, state, workdir, reduction, label, data_group, dvodb)
VALUES ('stack', %(stack_id)s, 'full', %(workdir)s, 'DEFAULT', %(label)s, %(data_group)s,
        %(dvodb)s);

-- name: insert_fakeRun
-- The fake stage between camera and warp, as the IPP chains them (warpRun.fake_id ->
-- fakeRun.cam_id): a run with no components of its own here.
INSERT INTO fakeRun (cam_id, state, workdir, label, data_group, dist_group, reduction, dvodb,
                     tess_id, end_stage)
VALUES (%(cam_id)s, 'full', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s, 'DEFAULT',
        %(dvodb)s, %(tess_id)s, 'diff');

-- name: insert_warpRun
INSERT INTO warpRun (fake_id, mode, state, workdir, label, data_group, dist_group, dvodb,
                     tess_id, reduction, end_stage, magicked, software_ver, registered)
VALUES (%(fake_id)s, 'warp', 'new', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s,
        %(dvodb)s, %(tess_id)s, 'DEFAULT', 'diff', %(magicked)s, %(software_ver)s,
        %(registered)s);

-- name: insert_warpSkyCellMap
INSERT INTO warpSkyCellMap (warp_id, skycell_id, tess_id, class_id)
VALUES (%(warp_id)s, %(skycell_id)s, %(tess_id)s, %(class_id)s);

-- name: insert_warpImfile
INSERT INTO warpImfile (warp_id, skycell_id) VALUES (%(warp_id)s, %(skycell_id)s);

-- name: insert_warpSkyfile
INSERT INTO warpSkyfile (warp_id, skycell_id, tess_id, uri, path_base, data_state, bg,
                         bg_stdev, hostname, good_frac, quality, fault, magicked, software_ver)
VALUES (%(warp_id)s, %(skycell_id)s, %(tess_id)s, %(uri)s, %(path_base)s, 'full', %(bg)s,
        %(bg_stdev)s, 'refproc', %(good_frac)s, 0, 0, %(magicked)s, %(software_ver)s);

-- name: set_warpRun_full
UPDATE warpRun SET state = 'full' WHERE warp_id = %(id)s;

-- name: insert_stackRun
INSERT INTO stackRun (state, workdir, label, data_group, dist_group, reduction, dvodb,
                      registered, skycell_id, tess_id, filter, software_ver)
VALUES ('new', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s, 'DEFAULT', %(dvodb)s,
        %(registered)s, %(skycell_id)s, %(tess_id)s, %(filter)s, %(software_ver)s);

-- name: insert_stackInputSkyfile
INSERT INTO stackInputSkyfile (stack_id, warp_id) VALUES (%(stack_id)s, %(warp_id)s);

-- name: insert_stackSumSkyfile
INSERT INTO stackSumSkyfile (stack_id, uri, path_base, bg, bg_stdev, sources, hostname,
                             good_frac, mjd_obs, fault, software_ver, quality)
VALUES (%(stack_id)s, %(uri)s, %(path_base)s, %(bg)s, %(bg_stdev)s, %(sources)s, 'refproc',
        %(good_frac)s, %(mjd_obs)s, 0, %(software_ver)s, 0);

-- name: set_stackRun_full
UPDATE stackRun SET state = 'full' WHERE stack_id = %(id)s;

-- name: insert_diffRun
INSERT INTO diffRun (state, workdir, label, data_group, dist_group, reduction, dvodb,
                     registered, tess_id, magicked, software_ver, diff_mode)
VALUES ('new', %(workdir)s, %(label)s, %(data_group)s, %(dist_group)s, 'DEFAULT', %(dvodb)s,
        %(registered)s, %(tess_id)s, %(magicked)s, %(software_ver)s, 1);

-- name: insert_diffInputSkyfile
INSERT INTO diffInputSkyfile (diff_id, skycell_id, warp1, stack2, tess_id)
VALUES (%(diff_id)s, %(skycell_id)s, %(warp_id)s, %(stack_id)s, %(tess_id)s);

-- name: insert_diffSkyfile
INSERT INTO diffSkyfile (diff_id, skycell_id, path_base, data_state, bg, bg_stdev, sources,
                         hostname, good_frac, quality, fault, magicked, software_ver)
VALUES (%(diff_id)s, %(skycell_id)s, %(path_base)s, 'full', %(bg)s, %(bg_stdev)s,
        %(sources)s, 'refproc', %(good_frac)s, 0, 0, 0, %(software_ver)s);

-- name: set_diffRun_full
UPDATE diffRun SET state = 'full' WHERE diff_id = %(id)s;

-- name: insert_skycell
-- radeg/decdeg/width/height are the IPP's columns for the same centre and size (degrees).
INSERT IGNORE INTO skycell (tess_id, skycell_id, ra, decl, size_px, scale_deg, radeg, decdeg,
                            width, height)
VALUES (%(tess_id)s, %(skycell_id)s, %(ra)s, %(decl)s, %(size_px)s, %(scale_deg)s, %(ra)s,
        %(decl)s, %(size_px)s * %(scale_deg)s, %(size_px)s * %(scale_deg)s);

-- name: get_rawExp
SELECT exp_id, exp_name, filter, dateobs, exp_time, airmass, ra, decl FROM rawExp
WHERE exp_id = %(exp_id)s;
