-- Agent clients: registration, heartbeat, control, sweeping.

-- name: register_client
INSERT INTO clients (client_id, agent, host, pid, config, version, started_at, heartbeat_at, status)
VALUES (%(client_id)s, %(agent)s, %(host)s, %(pid)s, %(config)s, %(version)s, NOW(6), NOW(6), 'running')
ON DUPLICATE KEY UPDATE client_id = client_id;

-- name: heartbeat
-- Writes liveness with the database clock; never revives a client the sweeper declared dead.
UPDATE clients
SET heartbeat_at = NOW(6), status = %(status)s, current_item = %(current_item)s,
    items_done = %(items_done)s, items_failed = %(items_failed)s, counters = %(counters)s,
    last_error = %(last_error)s, last_error_at = %(last_error_at)s
WHERE client_id = %(client_id)s AND status <> 'dead';

-- name: read_control
-- The client's own command and the standing flags that match its agent, host and config.
SELECT c.status AS status, c.command AS command,
       (SELECT GROUP_CONCAT(DISTINCT f.command ORDER BY f.command)
          FROM agent_control f
         WHERE f.agent IN ('', %(agent)s) AND f.host IN ('', %(host)s)
           AND f.config IN ('', %(config)s)) AS standing
FROM clients c
WHERE c.client_id = %(client_id)s;

-- name: end_client
UPDATE clients
SET status = %(status)s, ended_at = NOW(6), heartbeat_at = NOW(6), current_item = NULL,
    items_done = %(items_done)s, items_failed = %(items_failed)s, counters = %(counters)s,
    last_error = %(last_error)s, last_error_at = %(last_error_at)s
WHERE client_id = %(client_id)s AND status <> 'dead';

-- name: mark_stale_clients_dead
UPDATE clients
SET status = 'dead', ended_at = NOW(6)
WHERE status IN ('running', 'paused', 'stopping')
  AND heartbeat_at < TIMESTAMPADD(MICROSECOND, -%(stale_us)s, NOW(6));

-- name: prune_ended_clients
DELETE FROM clients
WHERE status IN ('stopped', 'dead')
  AND ended_at < TIMESTAMPADD(SECOND, -%(retention_s)s, NOW(6))
LIMIT 1000;

-- name: list_clients
SELECT client_id, agent, host, pid, config, version, status, command,
       started_at, heartbeat_at, ended_at,
       TIMESTAMPDIFF(MICROSECOND, heartbeat_at, NOW(6)) / 1000000 AS heartbeat_age_s,
       current_item, items_done, items_failed, counters, last_error, last_error_at
FROM clients
WHERE %(all)s OR ended_at IS NULL OR ended_at > TIMESTAMPADD(HOUR, -24, NOW(6))
ORDER BY agent, host, started_at;

-- name: get_client
SELECT client_id, agent, host, config, status FROM clients WHERE client_id = %(client_id)s;

-- name: command_client
UPDATE clients SET command = %(command)s, command_at = NOW(6)
WHERE client_id = %(client_id)s AND status IN ('running', 'paused', 'stopping');

-- name: command_matching_clients
UPDATE clients SET command = %(command)s, command_at = NOW(6)
WHERE status IN ('running', 'paused', 'stopping')
  AND (%(agent)s = '' OR agent = %(agent)s)
  AND (%(host)s = '' OR host = %(host)s)
  AND (%(config)s = '' OR config = %(config)s);

-- name: set_standing_flag
INSERT INTO agent_control (agent, host, config, command, set_by)
VALUES (%(agent)s, %(host)s, %(config)s, %(command)s, %(set_by)s)
ON DUPLICATE KEY UPDATE command = VALUES(command), set_at = NOW(6), set_by = VALUES(set_by);

-- name: clear_standing_flags
DELETE FROM agent_control
WHERE agent = %(agent)s AND host = %(host)s AND config = %(config)s;

-- name: list_standing_flags
SELECT agent, host, config, command, set_at, set_by FROM agent_control ORDER BY agent, host, config;

-- name: db_now
SELECT NOW(6) AS now;

-- name: metrics_counter_add
INSERT INTO metrics_counter (name, value) VALUES (%(name)s, %(n)s)
ON DUPLICATE KEY UPDATE value = value + VALUES(value);

-- name: claim_node_position
-- Which member of a Galera cluster this connection reached (0 .. size-1) and the cluster's
-- size, for the claims' node affinity; no rows, or a size of 0, on a server without Galera.
SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_index', 'wsrep_cluster_size', 'wsrep_ready');
