-- The metrics agent and ippctl metrics: summaries, time series, counters.

-- name: metrics_batch_stages
-- Batches per type and life-cycle states (read from the covering index psps_batch_stages).
SELECT config, type, processed, loaded_to_datastore, loaded_to_odm, merge_worthy, merged,
       deleted_datastore, deleted_dxlayer, deleted_local, COUNT(*) AS n,
       SUM(detections) AS detections
FROM psps_batch
WHERE config IN %(configs)s
GROUP BY config, type, processed, loaded_to_datastore, loaded_to_odm, merge_worthy, merged,
         deleted_datastore, deleted_dxlayer, deleted_local;

-- name: metrics_batch_rates
-- Batches published in the last hour, day and week, and the last one (index psps_batch_published).
SELECT config, type,
       SUM(loaded_to_datastore_at >= NOW(6) - INTERVAL 1 HOUR) AS last_hour,
       SUM(loaded_to_datastore_at >= NOW(6) - INTERVAL 1 DAY) AS last_day,
       COUNT(*) AS last_week
FROM psps_batch
WHERE config IN %(configs)s AND loaded_to_datastore_at >= NOW(6) - INTERVAL 7 DAY
GROUP BY config, type;

-- name: metrics_last_published
SELECT config, type, MAX(loaded_to_datastore_at) AS last_published
FROM psps_batch WHERE config IN %(configs)s GROUP BY config, type;

-- name: metrics_config_names
SELECT name FROM psps_config ORDER BY name;

-- name: metrics_items_pending
SELECT config, type, ra, decl FROM psps_item
WHERE config = %(config)s AND state = 'new';

-- name: metrics_items_by_state
SELECT config, type, state, COUNT(*) AS n FROM psps_item GROUP BY config, type, state;

-- name: metrics_runs_chip
SELECT state, COUNT(*) AS n FROM chipRun GROUP BY state;

-- name: metrics_runs_camera
SELECT state, COUNT(*) AS n FROM camRun GROUP BY state;

-- name: metrics_runs_warp
SELECT state, COUNT(*) AS n FROM warpRun GROUP BY state;

-- name: metrics_runs_stack
SELECT state, COUNT(*) AS n FROM stackRun GROUP BY state;

-- name: metrics_runs_diff
SELECT state, COUNT(*) AS n FROM diffRun GROUP BY state;

-- name: metrics_filesets
SELECT p.prod_name AS product, p.type, COUNT(f.fileset_id) AS n
FROM dsProduct p LEFT JOIN dsFileset f ON f.prod_id = p.prod_id
GROUP BY p.prod_name, p.type;

-- name: metrics_imported
SELECT state, COUNT(*) AS n FROM rcDSFileset GROUP BY state;

-- name: metrics_counters
SELECT name, value FROM metrics_counter ORDER BY name;

-- name: metrics_clients
SELECT client_id, agent, host, pid, config, status, current_item, items_done, items_failed,
       last_error, started_at, heartbeat_at,
       TIMESTAMPDIFF(MICROSECOND, heartbeat_at, NOW(6)) / 1e6 AS heartbeat_age_s
FROM clients
WHERE status IN ('running', 'paused', 'stopping') OR heartbeat_at >= NOW(6) - INTERVAL 1 HOUR
ORDER BY agent, host, pid;

-- name: metrics_sample_add
INSERT INTO metrics_sample (taken_at, metric, labels, value)
VALUES (%(taken_at)s, %(metric)s, %(labels)s, %(value)s);

-- name: metrics_samples_prune
DELETE FROM metrics_sample WHERE taken_at < NOW(6) - INTERVAL %(keep_s)s SECOND LIMIT 10000;

-- name: metrics_series
SELECT taken_at, labels, value FROM metrics_sample
WHERE metric = %(metric)s AND taken_at >= NOW(6) - INTERVAL %(since_s)s SECOND
ORDER BY taken_at;

-- name: metrics_last_sample
SELECT MAX(taken_at) AS taken_at FROM metrics_sample;
