-- Distribution (REFERENCE 7): what the dist_server agent ships, and what a mirror's
-- dist_client has received.

-- name: dist_queue
INSERT IGNORE INTO distRun (target_id, stage, stage_id, label, clean, product, state, no_magic)
VALUES (%(target_id)s, %(stage)s, %(stage_id)s, %(label)s, %(clean)s, %(product)s, 'new',
        %(no_magic)s);

-- name: dist_run_get
SELECT dist_id, target_id, stage, stage_id, label, clean, state, fault, product, fileset_name,
       note FROM distRun
WHERE product = %(product)s AND stage = %(stage)s AND stage_id = %(stage_id)s
  AND clean = %(clean)s;

-- name: dist_waiting_destreak
-- The queued runs that wait for their destreak, per stage and product.
SELECT stage, product, COUNT(*) AS runs FROM distWaitingDestreak
GROUP BY stage, product ORDER BY stage, product;

-- name: dist_runs
SELECT dist_id, stage, stage_id, clean, state, fault, product, fileset_name, note, registered,
       COALESCE(no_magic, 0) AS no_magic,
       EXISTS (SELECT 1 FROM distWaitingDestreak w WHERE w.dist_id = d.dist_id) AS waits_destreak
FROM distRun d ORDER BY dist_id DESC LIMIT %(limit)s;

-- name: dist_target_add
INSERT INTO distTarget (dist_group, filter, stage, clean, state, product, no_magic)
VALUES (%(dist_group)s, %(filter)s, %(stage)s, %(clean)s, 'enabled', %(product)s,
        %(no_magic)s);

-- name: dist_targets_enabled
SELECT target_id, dist_group, filter, stage, clean, product, no_magic FROM distTarget
WHERE state = 'enabled' ORDER BY target_id;

-- name: dist_targets
SELECT target_id, dist_group, filter, stage, clean, state, product, no_magic FROM distTarget
ORDER BY target_id;

-- A new distRun is taken once its run is destreaked (or it ships unmagicked): those that wait
-- are in distWaitingDestreak (migration 0019).
-- name: dist_claim
SELECT dist_id AS id, stage, stage_id, label, clean, product, target_id
FROM distRun d
WHERE state = 'new' AND owner IS NULL
  AND NOT EXISTS (SELECT 1 FROM distWaitingDestreak w WHERE w.dist_id = d.dist_id)
ORDER BY dist_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_distRun
UPDATE distRun SET owner = %(owner)s, claimed_at = NOW(6) WHERE dist_id IN %(ids)s;

-- name: claim_release_distRun
UPDATE distRun SET owner = NULL, claimed_at = NULL WHERE dist_id = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_distRun
UPDATE distRun SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: dist_finish
UPDATE distRun SET state = %(state)s, fault = %(fault)s, fileset_name = %(fileset)s,
       note = %(note)s, owner = NULL, claimed_at = NULL
WHERE dist_id = %(id)s AND owner = %(owner)s;

-- name: dist_component_add
INSERT INTO distComponent (dist_id, component, bytes, md5sum, state, name)
VALUES (%(dist_id)s, %(component)s, %(bytes)s, %(md5sum)s, 'full', %(name)s)
ON DUPLICATE KEY UPDATE bytes = VALUES(bytes), md5sum = VALUES(md5sum), state = 'full',
                        name = VALUES(name);

-- name: dist_diff_exp_name
SELECT e.exp_name FROM diffInputSkyfile i JOIN warpRun w ON w.warp_id = i.warp1
     JOIN fakeRun fk ON fk.fake_id = w.fake_id JOIN camRun c ON c.cam_id = fk.cam_id JOIN chipRun ch ON ch.chip_id = c.chip_id
     JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE i.diff_id = %(id)s ORDER BY i.skycell_id LIMIT 1;

-- name: dist_candidates_chip
-- The full runs of a dist group a product has not shipped, oldest first: the (state, id)
-- index in id order (migration 0022; MariaDB chose a walk of the primary key without the
-- hint) and one distRun lookup per run (NOT EXISTS was materialised over every run the
-- product ever shipped, bench/scale.py).
SELECT r.chip_id AS id, r.label FROM chipRun r FORCE INDEX (chipRun_state)
LEFT JOIN distRun d ON d.product = %(product)s AND d.stage = 'chip' AND d.stage_id = r.chip_id
                   AND d.clean = %(clean)s
WHERE r.state = 'full' AND r.dist_group <=> %(dist_group)s AND d.dist_id IS NULL
ORDER BY r.chip_id
LIMIT %(limit)s;

-- name: dist_candidates_camera
SELECT r.cam_id AS id, r.label FROM camRun r FORCE INDEX (camRun_state)
LEFT JOIN distRun d ON d.product = %(product)s AND d.stage = 'camera' AND d.stage_id = r.cam_id
                   AND d.clean = %(clean)s
WHERE r.state = 'full' AND r.dist_group <=> %(dist_group)s AND d.dist_id IS NULL
ORDER BY r.cam_id
LIMIT %(limit)s;

-- name: dist_candidates_warp
SELECT r.warp_id AS id, r.label FROM warpRun r FORCE INDEX (warpRun_state)
LEFT JOIN distRun d ON d.product = %(product)s AND d.stage = 'warp' AND d.stage_id = r.warp_id
                   AND d.clean = %(clean)s
WHERE r.state = 'full' AND r.dist_group <=> %(dist_group)s AND d.dist_id IS NULL
ORDER BY r.warp_id
LIMIT %(limit)s;

-- name: dist_candidates_diff
SELECT r.diff_id AS id, r.label FROM diffRun r FORCE INDEX (diffRun_state)
LEFT JOIN distRun d ON d.product = %(product)s AND d.stage = 'diff' AND d.stage_id = r.diff_id
                   AND d.clean = %(clean)s
WHERE r.state = 'full' AND r.dist_group <=> %(dist_group)s AND d.dist_id IS NULL
ORDER BY r.diff_id
LIMIT %(limit)s;

-- name: dist_candidates_stack
SELECT r.stack_id AS id, r.label FROM stackRun r FORCE INDEX (stackRun_state)
LEFT JOIN distRun d ON d.product = %(product)s AND d.stage = 'stack' AND d.stage_id = r.stack_id
                   AND d.clean = %(clean)s
WHERE r.state = 'full' AND r.dist_group <=> %(dist_group)s AND d.dist_id IS NULL
ORDER BY r.stack_id
LIMIT %(limit)s;

-- Receiving side.

-- name: rc_source_add
INSERT INTO rcDestination (name, status_uri, product, state, token)
VALUES (%(name)s, %(uri)s, %(product)s, 'enabled', %(token)s);

-- name: rc_source_token
-- The source's own DataStore token (NULL: it is sent none).
UPDATE rcDestination SET token = %(token)s WHERE name = %(name)s;

-- name: rc_sources
-- What operators see of a source: whether it has a token, never the token.
SELECT name, status_uri, product, last_fileset, state, note, token IS NOT NULL AS has_token
FROM rcDestination ORDER BY name;

-- name: rc_claim
SELECT name AS id, status_uri, product, last_fileset, token
FROM rcDestination
WHERE state = 'enabled' AND owner IS NULL
ORDER BY name
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: claim_mark_rcDestination
UPDATE rcDestination SET owner = %(owner)s, claimed_at = NOW(6) WHERE name IN %(ids)s;

-- name: claim_release_rcDestination
UPDATE rcDestination SET owner = NULL, claimed_at = NULL WHERE name = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_rcDestination
UPDATE rcDestination SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: rc_source_note
UPDATE rcDestination SET note = %(note)s WHERE name = %(id)s AND owner = %(owner)s;

-- name: rc_fileset_done
UPDATE rcDestination SET last_fileset = %(fileset)s, note = NULL
WHERE name = %(id)s AND owner = %(owner)s;

-- name: rc_fileset_state
INSERT INTO rcDSFileset (source, name, state, fault, note)
VALUES (%(source)s, %(name)s, %(state)s, %(fault)s, %(note)s)
ON DUPLICATE KEY UPDATE state = VALUES(state), fault = VALUES(fault), note = VALUES(note),
                        retry_at = NULL;

-- A failed fileset imported on a retry: the source's place in its listing stays where it is.
-- name: rc_fileset_retried
UPDATE rcDestination SET note = NULL WHERE name = %(id)s AND owner = %(owner)s;

-- A fileset that failed: its reason, one attempt more, and when to try it again.
-- name: rc_fileset_failed
INSERT INTO rcDSFileset (source, name, state, fault, note, attempts, retry_at)
VALUES (%(source)s, %(name)s, 'failed', 1, %(note)s, 1,
        NOW(6) + INTERVAL %(retry_s)s SECOND)
ON DUPLICATE KEY UPDATE state = 'failed', fault = 1, note = VALUES(note),
                        attempts = attempts + 1, retry_at = VALUES(retry_at);

-- The source's listing has been handled up to this fileset (imported or recorded failed).
-- name: rc_fileset_passed
UPDATE rcDestination SET last_fileset = %(fileset)s WHERE name = %(id)s AND owner = %(owner)s;

-- name: rc_fileset_get
SELECT source, name, state, fault, note, attempts, retry_at FROM rcDSFileset
WHERE source = %(source)s AND name = %(name)s;

-- Failed filesets of a source whose time to be tried again has come.
-- name: rc_retries_due
SELECT name, attempts FROM rcDSFileset
WHERE source = %(source)s AND state = 'failed' AND retry_at <= NOW(6)
ORDER BY retry_at LIMIT %(limit)s;

-- How many filesets of a source are failed, counted up to a cap (rcDSFileset_retry).
-- name: rc_failed_count
SELECT COUNT(*) FROM (
    SELECT 1 FROM rcDSFileset WHERE source = %(source)s AND state = 'failed' LIMIT %(cap)s
) failed;

-- name: rc_failed
SELECT source, name, attempts, retry_at, note, updated FROM rcDSFileset
WHERE state = 'failed' AND (%(source)s IS NULL OR source = %(source)s)
ORDER BY source, updated LIMIT %(limit)s;

-- name: rc_retry_now
UPDATE rcDSFileset SET retry_at = NOW(6)
WHERE state = 'failed' AND name = %(name)s AND (%(source)s IS NULL OR source = %(source)s);

-- name: rc_filesets
SELECT source, name, state, fault, note, updated FROM rcDSFileset
WHERE source = %(source)s ORDER BY updated DESC LIMIT %(limit)s;

-- name: dist_record_streak_run
-- The streak run a destreak record refers to, unless one of that magic_id is here already.
INSERT INTO magicRun (magic_id, state, note)
SELECT %(magic_id)s, 'full', %(note)s FROM DUAL
WHERE %(magic_id)s > 0 AND NOT EXISTS (SELECT 1 FROM magicRun m WHERE m.magic_id = %(magic_id)s);

-- name: dist_record_destreak
-- A run that arrives destreaked (magicked > 0, the streak run's magic_id) gets the destreak
-- record the source kept and did not ship (the magic tables travel with no stage), so that
-- an update here can give its magicked back after cleanup set it to -1 (REFERENCE 1).
INSERT INTO magicDSRun (magic_id, stage, stage_id, state, note)
SELECT %(magic_id)s, %(stage)s, %(stage_id)s, 'full', %(note)s FROM DUAL
WHERE %(magic_id)s > 0
  AND NOT EXISTS (SELECT 1 FROM magicDSRun d WHERE d.stage = %(stage)s AND d.stage_id = %(stage_id)s);
