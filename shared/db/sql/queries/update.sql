-- The update agent: claims of runs in `update`, what regenerating each stage reads, and the
-- state changes at the end (REFERENCE 1 and 3).

-- name: update_claim_chip
-- The next run in update after the last one the pass took, over the (state, id) index
-- (migration 0022): a seek, however many runs the table holds.
SELECT r.chip_id AS id, r.state, r.label, r.workdir, r.magicked AS magicked, r.note
FROM chipRun r FORCE INDEX (chipRun_state)
WHERE r.state = 'update' AND r.owner IS NULL AND r.chip_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM update_wait w
                  WHERE w.stage = 'chip' AND w.stage_id = r.chip_id
                    AND (w.failed = 1 OR w.not_before > NOW(6)))
ORDER BY r.chip_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: update_finish_chip
UPDATE chipRun
SET state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE chip_id = %(id)s AND owner = %(owner)s AND state = 'update';

-- name: update_release_chip
UPDATE chipRun SET note = %(note)s, owner = NULL, claimed_at = NULL
WHERE chip_id = %(id)s AND owner = %(owner)s;

-- name: update_components_full_chip
UPDATE chipProcessedImfile
SET data_state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked)
WHERE chip_id = %(id)s AND class_id IN %(components)s;

-- name: update_claim_camera
SELECT r.cam_id AS id, r.state, r.label, r.workdir, r.magicked AS magicked, r.note
FROM camRun r FORCE INDEX (camRun_state)
WHERE r.state = 'update' AND r.owner IS NULL AND r.cam_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM update_wait w
                  WHERE w.stage = 'camera' AND w.stage_id = r.cam_id
                    AND (w.failed = 1 OR w.not_before > NOW(6)))
ORDER BY r.cam_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: update_finish_camera
UPDATE camRun
SET state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE cam_id = %(id)s AND owner = %(owner)s AND state = 'update';

-- name: update_release_camera
UPDATE camRun SET note = %(note)s, owner = NULL, claimed_at = NULL
WHERE cam_id = %(id)s AND owner = %(owner)s;

-- name: update_claim_warp
SELECT r.warp_id AS id, r.state, r.label, r.workdir, r.magicked AS magicked, r.note
FROM warpRun r FORCE INDEX (warpRun_state)
WHERE r.state = 'update' AND r.owner IS NULL AND r.warp_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM update_wait w
                  WHERE w.stage = 'warp' AND w.stage_id = r.warp_id
                    AND (w.failed = 1 OR w.not_before > NOW(6)))
ORDER BY r.warp_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: update_finish_warp
UPDATE warpRun
SET state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE warp_id = %(id)s AND owner = %(owner)s AND state = 'update';

-- name: update_release_warp
UPDATE warpRun SET note = %(note)s, owner = NULL, claimed_at = NULL
WHERE warp_id = %(id)s AND owner = %(owner)s;

-- name: update_components_full_warp
UPDATE warpSkyfile
SET data_state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked)
WHERE warp_id = %(id)s AND skycell_id IN %(components)s;

-- name: update_claim_diff
SELECT r.diff_id AS id, r.state, r.label, r.workdir, r.magicked AS magicked, r.note
FROM diffRun r FORCE INDEX (diffRun_state)
WHERE r.state = 'update' AND r.owner IS NULL AND r.diff_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM update_wait w
                  WHERE w.stage = 'diff' AND w.stage_id = r.diff_id
                    AND (w.failed = 1 OR w.not_before > NOW(6)))
ORDER BY r.diff_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: update_finish_diff
UPDATE diffRun
SET state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE diff_id = %(id)s AND owner = %(owner)s AND state = 'update';

-- name: update_release_diff
UPDATE diffRun SET note = %(note)s, owner = NULL, claimed_at = NULL
WHERE diff_id = %(id)s AND owner = %(owner)s;

-- name: update_components_full_diff
UPDATE diffSkyfile
SET data_state = 'full', magicked = IF(magicked < 0, COALESCE(%(magic_id)s, magicked), magicked)
WHERE diff_id = %(id)s AND skycell_id IN %(components)s;

-- name: update_claim_stack
SELECT r.stack_id AS id, r.state, r.label, r.workdir, 0 AS magicked, r.note
FROM stackRun r FORCE INDEX (stackRun_state)
WHERE r.state = 'update' AND r.owner IS NULL AND r.stack_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM update_wait w
                  WHERE w.stage = 'stack' AND w.stage_id = r.stack_id
                    AND (w.failed = 1 OR w.not_before > NOW(6)))
ORDER BY r.stack_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: update_finish_stack
UPDATE stackRun
SET state = 'full', note = %(note)s, owner = NULL, claimed_at = NULL
WHERE stack_id = %(id)s AND owner = %(owner)s AND state = 'update';

-- name: update_release_stack
UPDATE stackRun SET note = %(note)s, owner = NULL, claimed_at = NULL
WHERE stack_id = %(id)s AND owner = %(owner)s;

-- name: update_wait_set
INSERT INTO update_wait (stage, stage_id, not_before, attempts, reason, failed)
VALUES (%(stage)s, %(id)s, NOW(6) + INTERVAL %(delay_us)s MICROSECOND, 1, %(reason)s, %(failed)s)
ON DUPLICATE KEY UPDATE not_before = VALUES(not_before), attempts = attempts + 1,
                        reason = VALUES(reason), failed = VALUES(failed);

-- name: update_wait_clear
DELETE FROM update_wait WHERE stage = %(stage)s AND stage_id = %(id)s;

-- name: update_wait_get
SELECT stage, stage_id, not_before, attempts, reason, failed FROM update_wait
WHERE stage = %(stage)s AND stage_id = %(id)s;

-- name: update_skycells
SELECT tess_id, skycell_id, ra, decl, size_px, scale_deg FROM skycell
WHERE skycell_id IN %(ids)s;

-- name: update_chip_context
-- The streak run to restore magicked to: the run's destreak record (a mirror has one made at
-- import for a run that arrived destreaked, as the magic tables are not shipped).
SELECT r.chip_id, e.exp_id, e.exp_name, e.filter, e.dateobs, e.exp_time, e.airmass, e.ra, e.decl,
       (SELECT d.magic_id FROM magicDSRun d WHERE d.stage = 'chip' AND d.stage_id = r.chip_id
        ORDER BY d.magic_ds_id DESC LIMIT 1) AS magic_id
FROM chipRun r JOIN rawExp e ON e.exp_id = r.exp_id
WHERE r.chip_id = %(id)s;

-- name: update_chip_raws
SELECT class_id, uri, raw_image_id AS image_id, magicked FROM rawImfile
WHERE exp_id = %(exp_id)s ORDER BY class_id;

-- name: update_camera_context
SELECT c.cam_id, c.chip_id,
       COALESCE((SELECT m.magic_id FROM magicRun m WHERE m.exp_id = ch.exp_id
                 ORDER BY m.magic_id DESC LIMIT 1),
                (SELECT d.magic_id FROM magicDSRun d WHERE d.stage = 'camera' AND d.stage_id = c.cam_id
                 ORDER BY d.magic_ds_id DESC LIMIT 1)) AS magic_id
FROM camRun c JOIN chipRun ch ON ch.chip_id = c.chip_id
WHERE c.cam_id = %(id)s;

-- name: update_warp_context
SELECT w.warp_id, c.cam_id, c.state AS cam_state, c.magicked AS cam_magicked, c.chip_id,
       ch.state AS chip_state, ch.magicked AS chip_magicked,
       e.exp_id, e.exp_name, e.filter, e.dateobs, e.exp_time, e.airmass, e.ra, e.decl,
       COALESCE((SELECT m.magic_id FROM magicRun m WHERE m.exp_id = e.exp_id
                 ORDER BY m.magic_id DESC LIMIT 1),
                (SELECT d.magic_id FROM magicDSRun d WHERE d.stage = 'warp' AND d.stage_id = w.warp_id
                 ORDER BY d.magic_ds_id DESC LIMIT 1)) AS magic_id
FROM warpRun w JOIN fakeRun fk ON fk.fake_id = w.fake_id JOIN camRun c ON c.cam_id = fk.cam_id JOIN chipRun ch ON ch.chip_id = c.chip_id
     JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE w.warp_id = %(id)s;

-- name: update_warp_chips
SELECT m.skycell_id, m.class_id, p.path_base
FROM warpSkyCellMap m JOIN warpRun w ON w.warp_id = m.warp_id
     JOIN fakeRun fk ON fk.fake_id = w.fake_id JOIN camRun c ON c.cam_id = fk.cam_id
     JOIN chipProcessedImfile p ON p.chip_id = c.chip_id AND p.class_id = m.class_id
WHERE m.warp_id = %(id)s
ORDER BY m.skycell_id, m.class_id;

-- name: update_stack_context
SELECT s.stack_id, s.skycell_id, s.tess_id, s.filter, NULL AS magic_id
FROM stackRun s WHERE s.stack_id = %(id)s;

-- name: update_stack_warps
SELECT i.warp_id, w.state, w.magicked, f.path_base,
       e.exp_id, e.exp_name, e.filter, e.dateobs, e.exp_time, e.airmass, e.ra, e.decl
FROM stackInputSkyfile i JOIN stackRun s ON s.stack_id = i.stack_id
     JOIN warpRun w ON w.warp_id = i.warp_id
     LEFT JOIN warpSkyfile f ON f.warp_id = i.warp_id AND f.skycell_id = s.skycell_id
     JOIN fakeRun fk ON fk.fake_id = w.fake_id JOIN camRun c ON c.cam_id = fk.cam_id JOIN chipRun ch ON ch.chip_id = c.chip_id
     JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE i.stack_id = %(id)s
ORDER BY i.warp_id;

-- name: update_diff_context
SELECT r.diff_id,
       COALESCE((SELECT m.magic_id FROM magicRun m WHERE m.diff_id = r.diff_id
                 ORDER BY m.magic_id DESC LIMIT 1),
                (SELECT d.magic_id FROM magicDSRun d WHERE d.stage = 'diff' AND d.stage_id = r.diff_id
                 ORDER BY d.magic_ds_id DESC LIMIT 1)) AS magic_id
FROM diffRun r WHERE r.diff_id = %(id)s;

-- name: update_diff_inputs
SELECT i.skycell_id, i.tess_id, i.warp1 AS warp_id, i.stack2 AS stack_id,
       w.state AS warp_state, w.magicked AS warp_magicked, wf.path_base AS warp_path_base,
       s.state AS stack_state, sf.path_base AS stack_path_base,
       e.exp_id, e.exp_name, e.filter, e.dateobs, e.exp_time, e.airmass, e.ra, e.decl
FROM diffInputSkyfile i
     JOIN warpRun w ON w.warp_id = i.warp1
     LEFT JOIN warpSkyfile wf ON wf.warp_id = i.warp1 AND wf.skycell_id = i.skycell_id
     JOIN stackRun s ON s.stack_id = i.stack2
     LEFT JOIN stackSumSkyfile sf ON sf.stack_id = i.stack2
     JOIN fakeRun fk ON fk.fake_id = w.fake_id JOIN camRun c ON c.cam_id = fk.cam_id JOIN chipRun ch ON ch.chip_id = c.chip_id
     JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE i.diff_id = %(id)s
ORDER BY i.skycell_id;
