-- PSPS loading configurations.

-- name: psps_config_types
SELECT COLUMN_NAME AS name, COLUMN_TYPE AS sqltype FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'psps_config';

-- name: psps_config_get
SELECT name, datastore_product, datastore_type, datastore_publish, dvo_label, dvo_location,
       min_ra, max_ra, min_dec, max_dec, box_size_deg, epoch, survey_id, batch_types, test_mode,
       deletion_policy, active, updated_at
FROM psps_config WHERE name = %(name)s;

-- name: psps_configs
SELECT name, datastore_product, datastore_type, datastore_publish, dvo_label, dvo_location,
       min_ra, max_ra, min_dec, max_dec, box_size_deg, epoch, survey_id, batch_types, test_mode,
       deletion_policy, active, updated_at
FROM psps_config ORDER BY name;

-- name: psps_config_save
INSERT INTO psps_config (name, datastore_product, datastore_type, datastore_publish, dvo_label,
                         dvo_location, min_ra, max_ra, min_dec, max_dec, box_size_deg, epoch,
                         survey_id, batch_types, test_mode, deletion_policy, active)
VALUES (%(name)s, %(datastore_product)s, %(datastore_type)s, %(datastore_publish)s,
        %(dvo_label)s, %(dvo_location)s, %(min_ra)s, %(max_ra)s, %(min_dec)s, %(max_dec)s,
        %(box_size_deg)s, %(epoch)s, %(survey_id)s, %(batch_types)s, %(test_mode)s,
        %(deletion_policy)s, %(active)s)
ON DUPLICATE KEY UPDATE
    datastore_product = VALUES(datastore_product), datastore_type = VALUES(datastore_type),
    datastore_publish = VALUES(datastore_publish), dvo_label = VALUES(dvo_label),
    dvo_location = VALUES(dvo_location), min_ra = VALUES(min_ra), max_ra = VALUES(max_ra),
    min_dec = VALUES(min_dec), max_dec = VALUES(max_dec), box_size_deg = VALUES(box_size_deg),
    epoch = VALUES(epoch), survey_id = VALUES(survey_id), batch_types = VALUES(batch_types),
    test_mode = VALUES(test_mode), deletion_policy = VALUES(deletion_policy),
    active = VALUES(active);

-- Queue ------------------------------------------------------------------------------------

-- name: psps_stripe_add
INSERT IGNORE INTO psps_stripe (config, stripe, ra_min, ra_max)
VALUES (%(config)s, %(stripe)s, %(ra_min)s, %(ra_max)s);

-- name: psps_item_add
INSERT IGNORE INTO psps_item (config, type, item_id, stripe, box, ra, decl)
VALUES (%(config)s, %(type)s, %(item_id)s, %(stripe)s, %(box)s, %(ra)s, %(decl)s);

-- name: psps_items_retry
UPDATE psps_item SET state = 'new', note = NULL
WHERE config = %(config)s AND state = 'failed' AND attempts < %(max_attempts)s;

-- name: psps_items_requeue
-- An operator's requeue: every failed item back, its attempts counted afresh.
UPDATE psps_item SET state = 'new', attempts = 0, note = NULL
WHERE config = %(config)s AND state = 'failed';

-- name: psps_items_reload
-- Done items with no batch of the current epoch go back to the queue. A batch counts once it
-- is on the DataStore, or once built when the config does not publish (datastore_publish 0):
-- else every queue would have those built again under new batch numbers.
UPDATE psps_item i SET state = 'new'
WHERE i.config = %(config)s AND i.state = 'done'
  AND NOT EXISTS (SELECT 1 FROM psps_batch b JOIN psps_config c ON c.name = b.config
                  WHERE b.config = i.config AND b.type = i.type AND b.item_id = i.item_id
                    AND (b.loaded_to_datastore = 'succeeded'
                         OR (c.datastore_publish = 0 AND b.processed = 'succeeded'))
                    AND b.created_at >= %(epoch)s);

-- name: psps_p2_candidates
SELECT a.stage_id AS item_id, e.ra AS ra, e.decl AS decl
FROM addRun a JOIN camRun c ON c.cam_id = a.stage_id
     JOIN chipRun ch ON ch.chip_id = c.chip_id JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE a.stage = 'camera' AND a.state = 'full' AND a.dvodb = %(dvodb)s
  AND e.ra >= %(ra_min)s AND e.ra < %(ra_max)s AND e.decl >= %(dec_min)s AND e.decl < %(dec_max)s
ORDER BY a.stage_id;

-- name: psps_st_candidates
-- Seed 003: the stacks merged into the DVO database in use (addRun), as for P2.
SELECT a.stage_id AS item_id, k.ra AS ra, k.decl AS decl
FROM addRun a JOIN stackRun s ON s.stack_id = a.stage_id
     JOIN skycell k ON k.skycell_id = s.skycell_id AND k.tess_id = s.tess_id
WHERE a.stage = 'stack' AND a.state = 'full' AND a.dvodb = %(dvodb)s
  AND k.ra >= %(ra_min)s AND k.ra < %(ra_max)s AND k.decl >= %(dec_min)s AND k.decl < %(dec_max)s
ORDER BY a.stage_id;

-- name: psps_queue_counts
SELECT type, state, COUNT(*) AS n FROM psps_item WHERE config = %(config)s
GROUP BY type, state ORDER BY type, state;

-- Loader -----------------------------------------------------------------------------------

-- name: psps_stripe_claim
SELECT s.stripe_key AS id, s.stripe, s.ra_min, s.ra_max
FROM psps_stripe s
WHERE s.config = %(config)s AND s.owner IS NULL
  AND EXISTS (SELECT 1 FROM psps_item i WHERE i.config = s.config AND i.stripe = s.stripe
                AND i.state = 'new' AND i.owner IS NULL)
ORDER BY s.stripe
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: psps_stripe_busiest
SELECT s.stripe_key AS id, s.stripe, s.ra_min, s.ra_max, COUNT(*) AS pending
FROM psps_stripe s JOIN psps_item i ON i.config = s.config AND i.stripe = s.stripe
WHERE s.config = %(config)s AND i.state = 'new' AND i.owner IS NULL
GROUP BY s.stripe_key, s.stripe, s.ra_min, s.ra_max
ORDER BY pending DESC, s.stripe
LIMIT 1;

-- name: claim_mark_psps_stripe
UPDATE psps_stripe SET owner = %(owner)s, claimed_at = NOW(6) WHERE stripe_key IN %(ids)s;

-- name: claim_release_psps_stripe
UPDATE psps_stripe SET owner = NULL, claimed_at = NULL
WHERE stripe_key = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_psps_stripe
UPDATE psps_stripe SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: psps_item_claim
SELECT i.item_key AS id, i.config, i.type, i.item_id, i.box, i.attempts, i.batch_id
FROM psps_item i
WHERE i.config = %(config)s AND i.stripe = %(stripe)s AND i.state = 'new' AND i.owner IS NULL
  AND i.type IN %(types)s
ORDER BY i.box, i.item_key
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: psps_item_claim_first
-- Test mode (seed 003): the first queued exposure of the config, wherever it lies.
SELECT i.item_key AS id, i.config, i.type, i.item_id, i.box, i.attempts, i.batch_id
FROM psps_item i
WHERE i.config = %(config)s AND i.state = 'new' AND i.owner IS NULL AND i.type = 'P2'
ORDER BY i.item_key
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: psps_box_smfs
-- The smfs and cmfs (P2 and ST items) queued in one box of a stripe, for the DVO cache's choice.
SELECT COUNT(*) FROM psps_item
WHERE config = %(config)s AND stripe = %(stripe)s AND box = %(box)s AND state = 'new'
  AND type IN ('P2', 'ST');

-- name: claim_mark_psps_item
UPDATE psps_item SET owner = %(owner)s, claimed_at = NOW(6) WHERE item_key IN %(ids)s;

-- name: claim_release_psps_item
UPDATE psps_item SET owner = NULL, claimed_at = NULL WHERE item_key = %(id)s AND owner = %(owner)s;

-- name: claim_release_orphans_psps_item
UPDATE psps_item SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: psps_item_batch
UPDATE psps_item SET batch_id = %(batch_id)s WHERE item_key = %(id)s AND owner = %(owner)s;

-- name: psps_item_finish
UPDATE psps_item
SET state = %(state)s, attempts = attempts + %(attempt)s, note = %(note)s, owner = NULL,
    claimed_at = NULL
WHERE item_key = %(id)s AND owner = %(owner)s;

-- name: psps_batch_new
INSERT INTO psps_batch (config, type, item_id) VALUES (%(config)s, %(type)s, %(item_id)s);

-- name: psps_batch_name
UPDATE psps_batch SET name = %(name)s WHERE batch_id = %(batch_id)s;

-- name: psps_batch_abandon
UPDATE psps_batch SET processed = 'failed', processed_at = NOW(6), note = %(note)s
WHERE batch_id = %(batch_id)s AND processed = 'pending';

-- name: psps_batch_failed
UPDATE psps_batch SET processed = 'failed', processed_at = NOW(6), note = %(note)s
WHERE batch_id = %(batch_id)s;

-- name: psps_batch_published
UPDATE psps_batch
SET detections = %(detections)s, duplicates = %(duplicates)s, fits_path = %(fits_path)s,
    fileset = %(fileset)s, processed = 'succeeded', processed_at = NOW(6),
    loaded_to_datastore = %(loaded)s, loaded_to_datastore_at = IF(%(loaded)s = 'succeeded', NOW(6), NULL)
WHERE batch_id = %(batch_id)s;

-- name: psps_batch_loaded
-- The fileset of a batch recorded before it is registered (a separate ippToPsps database).
UPDATE psps_batch SET loaded_to_datastore = 'succeeded', loaded_to_datastore_at = NOW(6)
WHERE batch_id = %(batch_id)s AND loaded_to_datastore = 'pending';

-- name: psps_batch_get
SELECT batch_id, name, config, type, item_id, fileset, processed, loaded_to_datastore
FROM psps_batch WHERE batch_id = %(batch_id)s;

-- name: psps_batches
SELECT batch_id, name, config, type, item_id, detections, duplicates, fits_path, fileset, note,
       created_at, processed, loaded_to_datastore, loaded_to_odm, merge_worthy, merged, deleted_datastore,
       deleted_dxlayer, deleted_local
FROM psps_batch
WHERE config = %(config)s AND (%(type)s IS NULL OR type = %(type)s)
ORDER BY batch_id;

-- name: psps_in_published
SELECT batch_id, name FROM psps_batch
WHERE config = %(config)s AND type = 'IN' AND processed = 'succeeded'
ORDER BY batch_id LIMIT 1;

-- name: psps_p2_frame
SELECT c.cam_id, c.chip_id, c.software_ver, p.path_base, e.exp_id, e.exp_name, e.filter,
       e.ra, e.decl, e.exp_time, e.airmass, e.dateobs
FROM camRun c JOIN camProcessedExp p ON p.cam_id = c.cam_id
     JOIN chipRun ch ON ch.chip_id = c.chip_id JOIN rawExp e ON e.exp_id = ch.exp_id
WHERE c.cam_id = %(cam_id)s;

-- name: psps_st_stack
SELECT s.stack_id, s.skycell_id, s.tess_id, s.filter, f.path_base
FROM stackRun s JOIN stackSumSkyfile f ON f.stack_id = s.stack_id
WHERE s.stack_id = %(stack_id)s;

-- name: psps_st_inputs
SELECT warp_id FROM stackInputSkyfile WHERE stack_id = %(stack_id)s ORDER BY warp_id;

-- ODM poller ---------------------------------------------------------------------------------

-- name: odm_poll_batches
-- Published batches PSPS has not finished with (merged or failed), not checked recently.
SELECT batch_id, name, config, type, item_id, loaded_to_datastore_at, loaded_to_odm,
       merge_worthy, merged,
       TIMESTAMPDIFF(MICROSECOND, loaded_to_datastore_at, NOW(6)) / 1e6 AS published_s
FROM psps_batch
WHERE config = %(config)s AND odm_done = 0 AND loaded_to_datastore = 'succeeded'
  AND purged = 0 AND type IN %(types)s
  AND (%(stage)s = 'all'
       OR (%(stage)s = 'unloaded' AND loaded_to_odm = 'pending')
       OR (%(stage)s = 'unmergeworthy' AND loaded_to_odm = 'succeeded' AND merge_worthy = 'pending')
       OR (%(stage)s = 'unmerged' AND merge_worthy = 'succeeded' AND merged = 'pending'))
  AND (odm_checked_at IS NULL OR odm_checked_at < NOW(6) - INTERVAL %(recheck_us)s MICROSECOND)
ORDER BY batch_id
LIMIT %(limit)s;

-- name: odm_checked
UPDATE psps_batch SET odm_checked_at = NOW(6) WHERE batch_id IN %(ids)s;

-- name: odm_record
-- What the ODM said: each stage moves from pending once (its time is set then); a failed
-- stage keeps the reason in the note; merged or failed ends the polling. Every batch in ids
-- got the same answer (a pass writes one statement per distinct answer).
UPDATE psps_batch
SET loaded_to_odm_at = IF(loaded_to_odm = 'pending' AND %(loaded)s <> 'pending', NOW(6),
                          loaded_to_odm_at),
    loaded_to_odm = IF(loaded_to_odm = 'pending', %(loaded)s, loaded_to_odm),
    merge_worthy_at = IF(merge_worthy = 'pending' AND %(worthy)s <> 'pending', NOW(6),
                         merge_worthy_at),
    merge_worthy = IF(merge_worthy = 'pending', %(worthy)s, merge_worthy),
    merged_at = IF(merged = 'pending' AND %(merged)s <> 'pending', NOW(6), merged_at),
    merged = IF(merged = 'pending', %(merged)s, merged),
    odm_status = %(status)s, odm_checked_at = NOW(6), odm_done = %(done)s,
    note = COALESCE(%(note)s, note)
WHERE batch_id IN %(ids)s AND odm_done = 0;

-- name: psps_item_requeue
-- The item of a batch PSPS failed goes back to the queue, unless its attempts are used up.
UPDATE psps_item
SET note = IF(attempts < %(max_attempts)s, %(note)s,
              CONCAT(%(note)s, ' (attempts used up: ', attempts, ')')),
    state = IF(attempts < %(max_attempts)s, 'new', 'failed')
WHERE config = %(config)s AND type = %(type)s AND item_id = %(item_id)s
  AND batch_id = %(batch_id)s AND state = 'done';

-- Batch cleaner ------------------------------------------------------------------------------

-- name: cleaner_batches
-- Batches whose copies may have to go: purged ones, and those PSPS has reached a verdict on.
SELECT batch_id, name, config, type, fileset, fits_path, purged, processed, loaded_to_odm,
       merge_worthy, merged, deleted_datastore, deleted_dxlayer, deleted_local,
       TIMESTAMPDIFF(MICROSECOND, deleted_datastore_at, NOW(6)) / 1e6 AS datastore_age_s,
       TIMESTAMPDIFF(MICROSECOND, deleted_dxlayer_at, NOW(6)) / 1e6 AS dxlayer_age_s,
       TIMESTAMPDIFF(MICROSECOND, deleted_local_at, NOW(6)) / 1e6 AS local_age_s
FROM psps_batch
WHERE config = %(config)s AND cleaned = 0
  AND (purged = 1 OR merge_worthy = 'succeeded' OR merged = 'succeeded'
       OR processed = 'failed' OR loaded_to_odm = 'failed' OR merge_worthy = 'failed'
       OR merged = 'failed')
ORDER BY batch_id
LIMIT %(limit)s;

-- name: batch_deleted
-- One copy's deletion: succeeded, or failed (tried again after batch_retry_s).
UPDATE psps_batch
SET deleted_datastore_at = IF(%(target)s = 'datastore', NOW(6), deleted_datastore_at),
    deleted_datastore = IF(%(target)s = 'datastore', %(state)s, deleted_datastore),
    deleted_dxlayer_at = IF(%(target)s = 'dxlayer', NOW(6), deleted_dxlayer_at),
    deleted_dxlayer = IF(%(target)s = 'dxlayer', %(state)s, deleted_dxlayer),
    deleted_local_at = IF(%(target)s = 'local', NOW(6), deleted_local_at),
    deleted_local = IF(%(target)s = 'local', %(state)s, deleted_local),
    note = COALESCE(%(note)s, note)
WHERE batch_id = %(batch_id)s;

-- name: batch_cleaned
UPDATE psps_batch SET cleaned = 1 WHERE batch_id = %(batch_id)s;

-- name: batches_uncleaned
-- A config's deletion policy changed: every batch is looked at again.
UPDATE psps_batch SET cleaned = 0 WHERE config = %(config)s AND cleaned = 1;

-- name: batches_by_name
SELECT batch_id, name, config, type, fileset, purged, deleted_datastore FROM psps_batch
WHERE config = %(config)s AND name BETWEEN %(first)s AND %(last)s ORDER BY name;

-- name: batch_purge
UPDATE psps_batch SET purged = 1, cleaned = 0 WHERE batch_id = %(batch_id)s;
