-- Claims and state changes of processing runs (cleanup and update agents).

-- Labels with runs waiting for cleanup, highest priority first; a label without a Label row
-- has priority 10000, as in the IPP's own queries (IFNULL(Label.priority, 10000)).
-- name: cleanup_pending_labels
SELECT 'chip' AS stage, r.label, COALESCE(l.priority, 10000) AS priority, COUNT(*) AS n
FROM chipRun r LEFT JOIN Label l ON l.label = r.label
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
GROUP BY r.label, l.priority
UNION ALL
SELECT 'camera' AS stage, r.label, COALESCE(l.priority, 10000) AS priority, COUNT(*) AS n
FROM camRun r LEFT JOIN Label l ON l.label = r.label
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
GROUP BY r.label, l.priority
UNION ALL
SELECT 'warp' AS stage, r.label, COALESCE(l.priority, 10000) AS priority, COUNT(*) AS n
FROM warpRun r LEFT JOIN Label l ON l.label = r.label
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
GROUP BY r.label, l.priority
UNION ALL
SELECT 'diff' AS stage, r.label, COALESCE(l.priority, 10000) AS priority, COUNT(*) AS n
FROM diffRun r LEFT JOIN Label l ON l.label = r.label
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
GROUP BY r.label, l.priority
UNION ALL
SELECT 'stack' AS stage, r.label, COALESCE(l.priority, 10000) AS priority, COUNT(*) AS n
FROM stackRun r LEFT JOIN Label l ON l.label = r.label
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
GROUP BY r.label, l.priority
ORDER BY priority DESC, stage, label;

-- name: cleanup_claim_chip
-- The index is named: on a table of a million runs MariaDB once took the owner index for
-- "owner IS NULL" and read every run (bench/scale.py); (state, label, id) reads the label's
-- waiting runs only.
SELECT r.chip_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM chipRun r FORCE INDEX (chipRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
ORDER BY r.chip_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: cleanup_claim_nearby_chip
-- Node affinity on Galera (shared.runtime.claims): this node's waiting runs, read without
-- locking any row; the claim then locks the first of them that is still free.
SELECT r.chip_id AS id
FROM chipRun r FORCE INDEX (chipRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
  AND CRC32(r.chip_id) MOD %(nodes)s = %(node)s
ORDER BY r.chip_id
LIMIT %(candidates)s;

-- name: cleanup_claim_lock_chip
SELECT r.chip_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM chipRun r
WHERE r.chip_id IN %(ids)s AND r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
  AND r.label <=> %(label)s
ORDER BY r.chip_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_chipRun
UPDATE chipRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE chip_id IN %(ids)s;

-- name: claim_release_chipRun
UPDATE chipRun SET owner = NULL, claimed_at = NULL WHERE chip_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_chipRun
UPDATE chipRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: cleanup_finish_chip
UPDATE chipRun
SET state = %(state)s, magicked = IF(%(unmagic)s AND magicked > 0, -1, magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE chip_id = %(id)s AND owner = %(owner)s AND state = %(goal)s;

-- name: cleanup_claim_camera
SELECT r.cam_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM camRun r FORCE INDEX (camRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
ORDER BY r.cam_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: cleanup_claim_nearby_camera
SELECT r.cam_id AS id
FROM camRun r FORCE INDEX (camRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
  AND CRC32(r.cam_id) MOD %(nodes)s = %(node)s
ORDER BY r.cam_id
LIMIT %(candidates)s;

-- name: cleanup_claim_lock_camera
SELECT r.cam_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM camRun r
WHERE r.cam_id IN %(ids)s AND r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
  AND r.label <=> %(label)s
ORDER BY r.cam_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_camRun
UPDATE camRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE cam_id IN %(ids)s;

-- name: claim_release_camRun
UPDATE camRun SET owner = NULL, claimed_at = NULL WHERE cam_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_camRun
UPDATE camRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: cleanup_finish_camera
UPDATE camRun
SET state = %(state)s, magicked = IF(%(unmagic)s AND magicked > 0, -1, magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE cam_id = %(id)s AND owner = %(owner)s AND state = %(goal)s;

-- name: cleanup_claim_warp
SELECT r.warp_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM warpRun r FORCE INDEX (warpRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
ORDER BY r.warp_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: cleanup_claim_nearby_warp
SELECT r.warp_id AS id
FROM warpRun r FORCE INDEX (warpRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
  AND CRC32(r.warp_id) MOD %(nodes)s = %(node)s
ORDER BY r.warp_id
LIMIT %(candidates)s;

-- name: cleanup_claim_lock_warp
SELECT r.warp_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM warpRun r
WHERE r.warp_id IN %(ids)s AND r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
  AND r.label <=> %(label)s
ORDER BY r.warp_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_warpRun
UPDATE warpRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE warp_id IN %(ids)s;

-- name: claim_release_warpRun
UPDATE warpRun SET owner = NULL, claimed_at = NULL WHERE warp_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_warpRun
UPDATE warpRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: cleanup_finish_warp
UPDATE warpRun
SET state = %(state)s, magicked = IF(%(unmagic)s AND magicked > 0, -1, magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE warp_id = %(id)s AND owner = %(owner)s AND state = %(goal)s;

-- name: cleanup_claim_diff
SELECT r.diff_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM diffRun r FORCE INDEX (diffRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
ORDER BY r.diff_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: cleanup_claim_nearby_diff
SELECT r.diff_id AS id
FROM diffRun r FORCE INDEX (diffRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
  AND CRC32(r.diff_id) MOD %(nodes)s = %(node)s
ORDER BY r.diff_id
LIMIT %(candidates)s;

-- name: cleanup_claim_lock_diff
SELECT r.diff_id AS id, r.state, r.label, r.workdir, r.magicked, r.note
FROM diffRun r
WHERE r.diff_id IN %(ids)s AND r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
  AND r.label <=> %(label)s
ORDER BY r.diff_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_diffRun
UPDATE diffRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE diff_id IN %(ids)s;

-- name: claim_release_diffRun
UPDATE diffRun SET owner = NULL, claimed_at = NULL WHERE diff_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_diffRun
UPDATE diffRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: cleanup_finish_diff
UPDATE diffRun
SET state = %(state)s, magicked = IF(%(unmagic)s AND magicked > 0, -1, magicked),
    note = %(note)s, owner = NULL, claimed_at = NULL
WHERE diff_id = %(id)s AND owner = %(owner)s AND state = %(goal)s;

-- name: cleanup_claim_stack
SELECT r.stack_id AS id, r.state, r.label, r.workdir, 0 AS magicked, r.note
FROM stackRun r FORCE INDEX (stackRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
ORDER BY r.stack_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: cleanup_claim_nearby_stack
SELECT r.stack_id AS id
FROM stackRun r FORCE INDEX (stackRun_state_label)
WHERE r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL AND r.label <=> %(label)s
  AND CRC32(r.stack_id) MOD %(nodes)s = %(node)s
ORDER BY r.stack_id
LIMIT %(candidates)s;

-- name: cleanup_claim_lock_stack
SELECT r.stack_id AS id, r.state, r.label, r.workdir, 0 AS magicked, r.note
FROM stackRun r
WHERE r.stack_id IN %(ids)s AND r.state IN ('goto_cleaned', 'goto_purged', 'goto_scrubbed') AND r.owner IS NULL
  AND r.label <=> %(label)s
ORDER BY r.stack_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_stackRun
UPDATE stackRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE stack_id IN %(ids)s;

-- name: claim_release_stackRun
UPDATE stackRun SET owner = NULL, claimed_at = NULL WHERE stack_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_stackRun
UPDATE stackRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: cleanup_finish_stack
UPDATE stackRun
SET state = %(state)s, note = %(note)s, owner = NULL, claimed_at = NULL
WHERE stack_id = %(id)s AND owner = %(owner)s AND state = %(goal)s;

-- name: cleanup_destreak_copies
-- Where the destreak of a run's components left its copies: the recovery of what it removed
-- and, for a file censored in place (a camera run's smf), the uncensored backup. A camera
-- run's one component is 'exposure' here (it has no class_id).
SELECT f.component, f.recovery_path_base, f.backup_path_base
FROM magicDSRun r JOIN magicDSFile f ON f.magic_ds_id = r.magic_ds_id
WHERE r.stage = %(stage)s AND r.stage_id = %(id)s
  AND (f.recovery_path_base IS NOT NULL OR f.backup_path_base IS NOT NULL);

-- name: cleanup_camera_of_chip
SELECT c.cam_id, c.state, p.path_base
FROM camRun c LEFT JOIN camProcessedExp p ON p.cam_id = c.cam_id
WHERE c.chip_id = %(id)s
ORDER BY c.cam_id;


-- name: cleanup_components_state_chip
UPDATE chipProcessedImfile
SET data_state = %(state)s, magicked = IF(magicked > 0, -1, magicked)
WHERE chip_id = %(id)s AND class_id IN %(components)s;

-- name: cleanup_components_state_warp
UPDATE warpSkyfile
SET data_state = %(state)s, magicked = IF(magicked > 0, -1, magicked)
WHERE warp_id = %(id)s AND skycell_id IN %(components)s;

-- name: cleanup_components_state_diff
UPDATE diffSkyfile
SET data_state = %(state)s, magicked = IF(magicked > 0, -1, magicked)
WHERE diff_id = %(id)s AND skycell_id IN %(components)s;
