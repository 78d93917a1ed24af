-- Run tools (ippctl runs): one query per operation and stage, picked by name.

-- name: runs_list_raw
SELECT r.exp_id AS id, r.state, NULL AS label, r.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked,
       (SELECT COUNT(*) FROM rawImfile c WHERE c.exp_id = r.exp_id) AS components
FROM rawExp r 
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR NULL = %(label)s)
ORDER BY r.exp_id
LIMIT %(limit)s;

-- name: runs_get_raw
SELECT r.exp_id AS id, r.state, NULL AS label, r.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked
FROM rawExp r 
WHERE r.exp_id = %(id)s;

-- name: runs_by_label_raw
SELECT r.exp_id AS id, r.state FROM rawExp r WHERE NULL = %(label)s ORDER BY r.exp_id;

-- name: runs_set_state_raw
UPDATE rawExp SET state = %(state)s WHERE exp_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_raw
-- A raw image's path_base is its uri without .fits, as disttool_pending_raw.sql has it.
SELECT c.class_id AS component, TRIM(TRAILING '.fits' FROM c.uri) AS path_base, c.uri, c.data_state,
       c.quality, c.fault, c.magicked
FROM rawImfile c JOIN rawExp r ON r.exp_id = c.exp_id
WHERE c.exp_id = %(id)s
ORDER BY c.class_id;

-- name: runs_list_fake
SELECT r.fake_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       0 AS magicked,
       (SELECT COUNT(*) FROM fakeProcessedImfile c WHERE c.fake_id = r.fake_id) AS components
FROM fakeRun r LEFT JOIN camRun m ON m.cam_id = r.cam_id LEFT JOIN chipRun p ON p.chip_id = m.chip_id
     LEFT JOIN rawExp e ON e.exp_id = p.exp_id
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.fake_id
LIMIT %(limit)s;

-- name: runs_get_fake
SELECT r.fake_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       0 AS magicked
FROM fakeRun r LEFT JOIN camRun m ON m.cam_id = r.cam_id LEFT JOIN chipRun p ON p.chip_id = m.chip_id
     LEFT JOIN rawExp e ON e.exp_id = p.exp_id
WHERE r.fake_id = %(id)s;

-- name: runs_by_label_fake
SELECT r.fake_id AS id, r.state FROM fakeRun r WHERE r.label = %(label)s ORDER BY r.fake_id;

-- name: runs_set_state_fake
UPDATE fakeRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE fake_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_fake
SELECT c.class_id AS component, c.path_base, c.uri, c.data_state, 0 AS quality, c.fault, 0 AS magicked
FROM fakeProcessedImfile c JOIN fakeRun r ON r.fake_id = c.fake_id
WHERE c.fake_id = %(id)s
ORDER BY c.class_id;

-- name: runs_list_chip
SELECT r.chip_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked,
       (SELECT COUNT(*) FROM chipProcessedImfile c WHERE c.chip_id = r.chip_id) AS components
FROM chipRun r LEFT JOIN rawExp e ON e.exp_id = r.exp_id
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.chip_id
LIMIT %(limit)s;

-- name: runs_get_chip
SELECT r.chip_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked
FROM chipRun r LEFT JOIN rawExp e ON e.exp_id = r.exp_id
WHERE r.chip_id = %(id)s;

-- name: runs_by_label_chip
SELECT r.chip_id AS id, r.state FROM chipRun r WHERE r.label = %(label)s ORDER BY r.chip_id;

-- name: runs_set_state_chip
UPDATE chipRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE chip_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_chip
SELECT c.class_id AS component, c.path_base, c.uri, c.data_state, c.quality, c.fault, c.magicked
FROM chipProcessedImfile c JOIN chipRun r ON r.chip_id = c.chip_id
WHERE c.chip_id = %(id)s
ORDER BY c.class_id;

-- name: runs_components_to_update_chip
UPDATE chipProcessedImfile SET data_state = 'update'
WHERE chip_id = %(id)s AND data_state IN ('cleaned', 'scrubbed', 'error_cleaned');

-- name: runs_list_camera
SELECT r.cam_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked,
       (SELECT COUNT(*) FROM camProcessedExp c WHERE c.cam_id = r.cam_id) AS components
FROM camRun r LEFT JOIN chipRun ch ON ch.chip_id = r.chip_id LEFT JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.cam_id
LIMIT %(limit)s;

-- name: runs_get_camera
SELECT r.cam_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked
FROM camRun r LEFT JOIN chipRun ch ON ch.chip_id = r.chip_id LEFT JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE r.cam_id = %(id)s;

-- name: runs_by_label_camera
SELECT r.cam_id AS id, r.state FROM camRun r WHERE r.label = %(label)s ORDER BY r.cam_id;

-- name: runs_set_state_camera
UPDATE camRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE cam_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_camera
SELECT NULL AS component, c.path_base, c.uri, NULL AS data_state, c.quality, c.fault, r.magicked
FROM camProcessedExp c JOIN camRun r ON r.cam_id = c.cam_id
WHERE c.cam_id = %(id)s
ORDER BY c.cam_id;

-- name: runs_list_warp
SELECT r.warp_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked,
       (SELECT COUNT(*) FROM warpSkyfile c WHERE c.warp_id = r.warp_id) AS components
FROM warpRun r LEFT JOIN fakeRun fk ON fk.fake_id = r.fake_id LEFT JOIN camRun cm ON cm.cam_id = fk.cam_id LEFT JOIN chipRun ch ON ch.chip_id = cm.chip_id LEFT JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.warp_id
LIMIT %(limit)s;

-- name: runs_get_warp
SELECT r.warp_id AS id, r.state, r.label AS label, e.exp_name AS name, r.workdir AS workdir,
       r.magicked AS magicked
FROM warpRun r LEFT JOIN fakeRun fk ON fk.fake_id = r.fake_id LEFT JOIN camRun cm ON cm.cam_id = fk.cam_id LEFT JOIN chipRun ch ON ch.chip_id = cm.chip_id LEFT JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE r.warp_id = %(id)s;

-- name: runs_by_label_warp
SELECT r.warp_id AS id, r.state FROM warpRun r WHERE r.label = %(label)s ORDER BY r.warp_id;

-- name: runs_set_state_warp
UPDATE warpRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE warp_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_warp
SELECT c.skycell_id AS component, c.path_base, c.uri, c.data_state, c.quality, c.fault, c.magicked
FROM warpSkyfile c JOIN warpRun r ON r.warp_id = c.warp_id
WHERE c.warp_id = %(id)s
ORDER BY c.skycell_id;

-- name: runs_components_to_update_warp
UPDATE warpSkyfile SET data_state = 'update'
WHERE warp_id = %(id)s AND data_state IN ('cleaned', 'scrubbed', 'error_cleaned');

-- name: runs_list_diff
SELECT r.diff_id AS id, r.state, r.label AS label, NULL AS name, r.workdir AS workdir,
       r.magicked AS magicked,
       (SELECT COUNT(*) FROM diffSkyfile c WHERE c.diff_id = r.diff_id) AS components
FROM diffRun r 
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.diff_id
LIMIT %(limit)s;

-- name: runs_get_diff
SELECT r.diff_id AS id, r.state, r.label AS label, NULL AS name, r.workdir AS workdir,
       r.magicked AS magicked
FROM diffRun r 
WHERE r.diff_id = %(id)s;

-- name: runs_by_label_diff
SELECT r.diff_id AS id, r.state FROM diffRun r WHERE r.label = %(label)s ORDER BY r.diff_id;

-- name: runs_set_state_diff
UPDATE diffRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE diff_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_diff
SELECT c.skycell_id AS component, c.path_base, NULL AS uri, c.data_state, c.quality, c.fault, c.magicked
FROM diffSkyfile c JOIN diffRun r ON r.diff_id = c.diff_id
WHERE c.diff_id = %(id)s
ORDER BY c.skycell_id;

-- name: runs_components_to_update_diff
UPDATE diffSkyfile SET data_state = 'update'
WHERE diff_id = %(id)s AND data_state IN ('cleaned', 'scrubbed', 'error_cleaned');

-- name: runs_list_stack
SELECT r.stack_id AS id, r.state, r.label AS label, r.skycell_id AS name, r.workdir AS workdir,
       0 AS magicked,
       (SELECT COUNT(*) FROM stackSumSkyfile c WHERE c.stack_id = r.stack_id) AS components
FROM stackRun r 
WHERE (%(state)s IS NULL OR r.state = %(state)s)
  AND (%(label)s IS NULL OR r.label = %(label)s)
ORDER BY r.stack_id
LIMIT %(limit)s;

-- name: runs_get_stack
SELECT r.stack_id AS id, r.state, r.label AS label, r.skycell_id AS name, r.workdir AS workdir,
       0 AS magicked
FROM stackRun r 
WHERE r.stack_id = %(id)s;

-- name: runs_by_label_stack
SELECT r.stack_id AS id, r.state FROM stackRun r WHERE r.label = %(label)s ORDER BY r.stack_id;

-- name: runs_set_state_stack
UPDATE stackRun SET state = %(state)s, label = COALESCE(%(new_label)s, label)
WHERE stack_id = %(id)s AND state IN %(allowed)s;

-- name: runs_components_stack
SELECT r.skycell_id AS component, c.path_base, c.uri, NULL AS data_state, c.quality, c.fault, 0 AS magicked
FROM stackSumSkyfile c JOIN stackRun r ON r.stack_id = c.stack_id
WHERE c.stack_id = %(id)s
ORDER BY c.stack_id;

-- name: runs_camera_chips
SELECT p.class_id FROM camRun r JOIN chipProcessedImfile p ON p.chip_id = r.chip_id
WHERE r.cam_id = %(id)s ORDER BY p.class_id;

-- The inputs of a stack, in {FILE.INDEX} order (one convolution kernel each).
-- name: runs_stack_inputs
SELECT COUNT(*) FROM stackInputSkyfile WHERE stack_id = %(id)s;

-- Export: every row of one table that belongs to one run.

-- name: export_rawExp
SELECT * FROM rawExp WHERE exp_id = %(id)s;

-- name: export_rawImfile
SELECT * FROM rawImfile WHERE exp_id = %(id)s;

-- name: export_fakeRun
SELECT * FROM fakeRun WHERE fake_id = %(id)s;

-- name: export_fakeProcessedImfile
SELECT * FROM fakeProcessedImfile WHERE fake_id = %(id)s;

-- name: export_chipRun
SELECT * FROM chipRun WHERE chip_id = %(id)s;

-- name: export_chipImfile
SELECT * FROM chipImfile WHERE chip_id = %(id)s;

-- name: export_chipProcessedImfile
SELECT * FROM chipProcessedImfile WHERE chip_id = %(id)s;

-- name: export_camRun
SELECT * FROM camRun WHERE cam_id = %(id)s;

-- name: export_camProcessedExp
SELECT * FROM camProcessedExp WHERE cam_id = %(id)s;

-- name: export_warpRun
SELECT * FROM warpRun WHERE warp_id = %(id)s;

-- name: export_warpImfile
SELECT * FROM warpImfile WHERE warp_id = %(id)s;

-- name: export_warpSkyfile
SELECT * FROM warpSkyfile WHERE warp_id = %(id)s;

-- name: export_warpSkyCellMap
SELECT * FROM warpSkyCellMap WHERE warp_id = %(id)s;

-- name: export_diffRun
SELECT * FROM diffRun WHERE diff_id = %(id)s;

-- name: export_diffInputSkyfile
SELECT * FROM diffInputSkyfile WHERE diff_id = %(id)s;

-- name: export_diffSkyfile
SELECT * FROM diffSkyfile WHERE diff_id = %(id)s;

-- name: export_stackRun
SELECT * FROM stackRun WHERE stack_id = %(id)s;

-- name: export_stackInputSkyfile
SELECT * FROM stackInputSkyfile WHERE stack_id = %(id)s;

-- name: export_stackSumSkyfile
SELECT * FROM stackSumSkyfile WHERE stack_id = %(id)s;

-- name: table_columns
SELECT column_name AS name, data_type AS type, is_nullable AS nullable,
       (column_default IS NOT NULL AND column_default <> 'NULL') AS has_default
FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = %(table)s
ORDER BY ordinal_position;

-- The runs whose components have these path_bases (a path_base belongs to one run only).
-- name: path_base_owners
SELECT 'chip' AS stage, chip_id AS id, path_base FROM chipProcessedImfile
WHERE path_base IN %(bases)s
UNION SELECT 'camera', cam_id, path_base FROM camProcessedExp WHERE path_base IN %(bases)s
UNION SELECT 'fake', fake_id, path_base FROM fakeProcessedImfile WHERE path_base IN %(bases)s
UNION SELECT 'warp', warp_id, path_base FROM warpSkyfile WHERE path_base IN %(bases)s
UNION SELECT 'diff', diff_id, path_base FROM diffSkyfile WHERE path_base IN %(bases)s
UNION SELECT 'stack', stack_id, path_base FROM stackSumSkyfile WHERE path_base IN %(bases)s
UNION SELECT 'raw', exp_id, uri FROM rawImfile WHERE uri IN %(bases)s;
