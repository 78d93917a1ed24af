-- The PSPS stand-in: the DXLayer's batches and the ODM's answers about them.

-- name: dx_batch_seen
INSERT IGNORE INTO dx_batch (name, product) VALUES (%(name)s, %(product)s);

-- name: dx_batches_todo
SELECT name, product, status, type FROM dx_batch
WHERE (status IN ('new', 'loaded') AND next_try_at <= NOW(6))
   OR (status = 'merge_worthy' AND merge_worthy_at <= NOW(6) - INTERVAL %(merge_delay_us)s MICROSECOND)
ORDER BY seen_at, name
LIMIT %(limit)s;

-- name: dx_batch_get
SELECT name, product, type, status, failed_stage, reason, detections, copy_path, copy_deleted,
       tries, seen_at, loaded_at, merge_worthy_at, merged_at, failed_at, deleted_at
FROM dx_batch WHERE name = %(name)s;

-- name: dx_batch_try_later
UPDATE dx_batch
SET tries = tries + 1, reason = %(reason)s,
    next_try_at = NOW(6) + INTERVAL %(wait_us)s MICROSECOND
WHERE name = %(name)s;

-- name: dx_batch_loaded
UPDATE dx_batch
SET status = 'loaded', type = %(type)s, detections = %(detections)s, copy_path = %(copy_path)s,
    reason = NULL, loaded_at = NOW(6)
WHERE name = %(name)s AND status = 'new';

-- name: dx_batch_merge_worthy
UPDATE dx_batch SET status = 'merge_worthy', merge_worthy_at = NOW(6)
WHERE name = %(name)s AND status = 'loaded';

-- name: dx_batch_merged
UPDATE dx_batch SET status = 'merged', merged_at = NOW(6)
WHERE name = %(name)s AND status = 'merge_worthy';

-- name: dx_batch_failed
UPDATE dx_batch
SET status = 'failed', failed_stage = %(stage)s, reason = %(reason)s, failed_at = NOW(6),
    type = COALESCE(type, %(type)s), copy_path = COALESCE(copy_path, %(copy_path)s)
WHERE name = %(name)s AND status NOT IN ('merged', 'failed');

-- name: dx_batch_copy_deleted
UPDATE dx_batch SET copy_deleted = 1, deleted_at = NOW(6) WHERE name = %(name)s;

-- name: dx_summary
SELECT status, COUNT(*) AS n, SUM(detections) AS detections FROM dx_batch GROUP BY status
ORDER BY status;
