-- Filling the processing tables for bench/scale.py (not timed), a range of runs at a time.
-- Every stage has one run per exposure (stacks one per ten), whose state follows its id:
-- the newest %(newest)s runs and every %(stride)s-th one are waiting for cleanup, the next
-- ids after those are in update and full (not yet distributed), every tenth run is full and
-- distributed, and all the others are cleaned. A component has its run's state as data_state.
-- MariaDB's SEQUENCE engine (seq_1_to_N) makes the rows.

-- name: scale_exposures
INSERT INTO rawExp (exp_id, exp_name, camera, telescope, dateobs, exp_type, state, ra, decl, filter)
SELECT seq, CONCAT('o', seq), 'GPC1', 'PS1', '2026-01-01' + INTERVAL seq SECOND, 'OBJECT', 'full',
       (seq * 0.618034) %% 360, -30 + (seq * 0.414214) %% 120, 'r.00000'
FROM seq_1_to_100000000 WHERE seq BETWEEN %(lo)s AND %(hi)s;

-- name: scale_chip_runs
INSERT INTO chipRun (chip_id, exp_id, state, workdir, label, data_group, dist_group, magicked, registered)
SELECT seq, seq,
       CASE WHEN seq > %(runs)s - %(newest)s OR seq %% %(stride)s = 1 THEN 'goto_cleaned'
            WHEN seq %% %(stride)s = 2 THEN 'update'
            WHEN seq %% %(stride)s = 3 OR seq %% 10 = 5 THEN 'full'
            ELSE 'cleaned' END,
       CONCAT('neb://scale/chip/', seq), CONCAT('scale.', seq %% 20), CONCAT('scale.', seq %% 100),
       'scale', 0, NOW()
FROM seq_1_to_100000000 WHERE seq BETWEEN %(lo)s AND %(hi)s;

-- name: scale_chip_components
INSERT INTO chipProcessedImfile (chip_id, exp_id, class_id, data_state, path_base, quality, fault, magicked)
SELECT r.chip_id, r.exp_id, CONCAT('XY', LPAD(c.seq, 2, '0')),
       IF(r.state = 'goto_cleaned', 'full', IF(r.state = 'update', 'cleaned', r.state)),
       CONCAT(r.workdir, '/o.', c.seq), 0, 0, 0
FROM chipRun r JOIN seq_1_to_60 c
WHERE r.chip_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_camera_runs
INSERT INTO camRun (cam_id, chip_id, state, workdir, label, data_group, dist_group, magicked, registered)
SELECT chip_id, chip_id, state, REPLACE(workdir, '/chip/', '/camera/'), label, data_group, dist_group, 0, registered
FROM chipRun WHERE chip_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_camera_components
INSERT INTO camProcessedExp (cam_id, path_base, fault, quality)
SELECT cam_id, CONCAT(workdir, '/o'), 0, 0 FROM camRun WHERE cam_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_warp_runs
INSERT INTO warpRun (warp_id, mode, state, workdir, label, data_group, dist_group, tess_id, magicked, registered)
SELECT chip_id, 'warp', state, REPLACE(workdir, '/chip/', '/warp/'), label, data_group, dist_group,
       'RINGS.V3', 0, registered
FROM chipRun WHERE chip_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_warp_components
INSERT INTO warpSkyfile (warp_id, skycell_id, tess_id, data_state, path_base, quality, fault, magicked)
SELECT r.warp_id, CONCAT('skycell.', (r.warp_id * 7 + c.seq) %% 100000), 'RINGS.V3',
       IF(r.state = 'goto_cleaned', 'full', IF(r.state = 'update', 'cleaned', r.state)),
       CONCAT(r.workdir, '/s.', c.seq), 0, 0, 0
FROM warpRun r JOIN seq_1_to_30 c
WHERE r.warp_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_diff_runs
INSERT INTO diffRun (diff_id, state, workdir, label, data_group, dist_group, tess_id, magicked, registered)
SELECT chip_id, state, REPLACE(workdir, '/chip/', '/diff/'), label, data_group, dist_group,
       'RINGS.V3', 0, registered
FROM chipRun WHERE chip_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_diff_components
INSERT INTO diffSkyfile (diff_id, skycell_id, data_state, path_base, quality, fault, magicked)
SELECT r.diff_id, CONCAT('skycell.', (r.diff_id * 7 + c.seq) %% 100000),
       IF(r.state = 'goto_cleaned', 'full', IF(r.state = 'update', 'cleaned', r.state)),
       CONCAT(r.workdir, '/d.', c.seq), 0, 0, 0
FROM diffRun r JOIN seq_1_to_8 c
WHERE r.diff_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_stack_runs
INSERT INTO stackRun (stack_id, state, workdir, label, data_group, dist_group, skycell_id, tess_id, registered)
SELECT chip_id DIV 10, state, REPLACE(workdir, '/chip/', '/stack/'), label, data_group, dist_group,
       CONCAT('skycell.', chip_id DIV 10), 'RINGS.V3', registered
FROM chipRun WHERE chip_id BETWEEN %(lo)s AND %(hi)s AND chip_id %% 10 = 0;

-- name: scale_distributed
-- Every full run with an id ending in 5 was shipped already.
INSERT INTO distRun (stage, stage_id, label, clean, state, product)
SELECT 'chip', chip_id, label, 0, 'full', 'scale' FROM chipRun
WHERE chip_id BETWEEN %(lo)s AND %(hi)s AND state = 'full' AND chip_id %% 10 = 5;

-- name: scale_added
-- Every camera run was merged into the DVO database 'scale' (what the loader queues P2 from).
INSERT INTO addRun (stage, stage_id, state, dvodb)
SELECT 'camera', cam_id, 'full', 'scale' FROM camRun WHERE cam_id BETWEEN %(lo)s AND %(hi)s;

-- name: scale_objects
INSERT INTO storage_object (obj_id, ext_id, bytes, md5sum)
SELECT seq, CONCAT('neb://scale/objects/', seq %% 1000, '/', seq, '.fits'), 0,
       'd41d8cd98f00b204e9800998ecf8427e'
FROM seq_1_to_100000000 WHERE seq BETWEEN %(lo)s AND %(hi)s;

-- name: scale_instances
INSERT INTO storage_instance (obj_id, vol_id, relpath)
SELECT seq, %(vol_id)s, CONCAT('objects/', seq %% 1000, '/', seq, '.fits')
FROM seq_1_to_100000000 WHERE seq BETWEEN %(lo)s AND %(hi)s;

-- name: scale_rows
SELECT (SELECT COUNT(*) FROM chipProcessedImfile) + (SELECT COUNT(*) FROM camProcessedExp)
     + (SELECT COUNT(*) FROM warpSkyfile) + (SELECT COUNT(*) FROM diffSkyfile)
     + (SELECT COUNT(*) FROM stackRun) AS components;

-- name: scale_pending_chip
SELECT COUNT(*) AS n FROM chipRun WHERE state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed');

-- name: scale_buffer_pool_mb
SELECT @@innodb_buffer_pool_size / 1048576 AS mb;

-- name: scale_sequence_engine
SELECT engine FROM information_schema.engines WHERE engine = 'SEQUENCE' AND support IN ('YES', 'DEFAULT');
