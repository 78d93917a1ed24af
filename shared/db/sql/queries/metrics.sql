-- The metrics agent and ippctl metrics: summaries, time series, counters.

-- name: metrics_batch_counts
-- Batches per config, type, life-cycle stage and outcome (kept by the psps_batch triggers).
SELECT config, type, stage, outcome, batches FROM psps_batch_count
WHERE config IN %(configs)s AND batches <> 0;

-- name: metrics_batch_hours
-- Batches published per clock hour (kept by the psps_batch triggers): the last 24 clock hours,
-- the last 7 days, all time with detections, and the last one.
SELECT config, type,
       SUM(IF(hour >= NOW() - INTERVAL 24 HOUR, published, 0)) AS last_day,
       SUM(IF(hour >= NOW() - INTERVAL 7 DAY, published, 0)) AS last_week,
       SUM(published) AS published, SUM(detections) AS detections,
       MAX(last_published) AS last_published
FROM psps_batch_hourly WHERE config IN %(configs)s
GROUP BY config, type;

-- name: metrics_batch_last_hour
-- Published in the last 60 minutes (a short range of the index psps_batch_published).
SELECT config, type, COUNT(*) AS n FROM psps_batch
WHERE config IN %(configs)s AND type IN ('IN', 'P2', 'ST', 'OB')
  AND loaded_to_datastore_at >= NOW(6) - INTERVAL 1 HOUR AND loaded_to_datastore = 'succeeded'
GROUP BY config, type;

-- name: metrics_config_names
SELECT name FROM psps_config ORDER BY name;

-- name: metrics_items_pending
SELECT config, type, ra, decl FROM psps_item
WHERE config = %(config)s AND state = 'new';

-- name: metrics_items_by_state
SELECT config, type, state, COUNT(*) AS n FROM psps_item GROUP BY config, type, state;

-- name: metrics_runs
-- Runs by stage and state, from the counts the run tables' triggers keep (migration 0021).
SELECT stage, state, SUM(runs) AS n FROM run_state_count GROUP BY stage, state HAVING SUM(runs) <> 0;

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

-- The czartool database (shared/observe/sql/czartool_schema.sql) ---------------------------

-- name: czartool_rates_add
INSERT IGNORE INTO ipptopsps_rates (taken_at, config, batch_type, batches_per_hour, last_24_hours,
                                    per_day_this_week, total_detections, last_published, dvo)
VALUES (%(taken_at)s, %(config)s, %(batch_type)s, %(batches_per_hour)s, %(last_24_hours)s,
        %(per_day_this_week)s, %(total_detections)s, %(last_published)s, %(dvo)s);

-- name: czartool_stages_add
INSERT IGNORE INTO ipptopsps_stages (taken_at, config, batch_type, stage, pending, succeeded, failed)
VALUES (%(taken_at)s, %(config)s, %(batch_type)s, %(stage)s, %(pending)s, %(succeeded)s, %(failed)s);
