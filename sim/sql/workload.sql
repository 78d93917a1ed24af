-- Queries of the synthetic workload agent (sim.workload).

-- name: work_claim_select
SELECT item_id, duration_ms FROM sim_work
WHERE state = 'pending' AND owner IS NULL
ORDER BY item_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: work_claim_nearby
-- Node affinity on Galera (shared.runtime.claims): this node's pending rows, no row locked.
SELECT item_id FROM sim_work
WHERE state = 'pending' AND owner IS NULL AND CRC32(item_id) MOD %(nodes)s = %(node)s
ORDER BY item_id
LIMIT %(candidates)s;

-- name: work_claim_lock
SELECT item_id, duration_ms FROM sim_work
WHERE item_id IN %(ids)s AND state = 'pending' AND owner IS NULL
ORDER BY item_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: work_claim_mark
UPDATE sim_work SET owner = %(owner)s, claimed_at = NOW(6) WHERE item_id IN %(ids)s;

-- name: work_release
UPDATE sim_work SET owner = NULL, claimed_at = NULL
WHERE item_id = %(id)s AND owner = %(owner)s;

-- name: work_release_orphans
UPDATE sim_work SET owner = NULL, claimed_at = NULL
WHERE owner IS NOT NULL
  AND owner NOT IN (SELECT client_id FROM clients WHERE status IN ('running', 'paused', 'stopping'));

-- name: work_finish
UPDATE sim_work SET state = 'done', owner = NULL, claimed_at = NULL
WHERE item_id = %(id)s AND owner = %(owner)s;

-- name: work_log_insert
INSERT INTO sim_work_log (item_id, client_id) VALUES (%(item_id)s, %(client_id)s);

-- name: work_add
INSERT INTO sim_work (duration_ms) VALUES (%(duration_ms)s);

-- name: work_counts
SELECT state, COUNT(*) AS n, SUM(owner IS NOT NULL) AS claimed FROM sim_work GROUP BY state;

-- name: work_get
SELECT item_id, state, owner, claimed_at FROM sim_work WHERE item_id = %(item_id)s;

-- name: work_log_for
SELECT item_id, client_id FROM sim_work_log WHERE item_id = %(item_id)s;

-- name: work_log_duplicates
SELECT item_id, COUNT(*) AS n FROM sim_work_log GROUP BY item_id HAVING COUNT(*) > 1;

-- name: work_log_count
SELECT COUNT(*) AS n FROM sim_work_log;

-- name: work_clear
DELETE FROM sim_work;

-- name: work_log_clear
DELETE FROM sim_work_log;
