-- name: schema_version
SELECT schema_version FROM dbversion ORDER BY schema_version DESC LIMIT 1;

-- name: dbversion_table_exists
SELECT COUNT(*) AS n FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name = 'dbversion';

-- name: dbrole_table_exists
SELECT COUNT(*) AS n FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name = 'dbrole';

-- name: dbrole_create
-- As migration 0020 makes it: a new database records its roles before its first migration.
CREATE TABLE IF NOT EXISTS dbrole (
  role VARCHAR(16) CHARACTER SET ascii NOT NULL PRIMARY KEY
) ENGINE=InnoDB;

-- name: dbroles
SELECT role FROM dbrole ORDER BY role;

-- name: dbrole_add
INSERT IGNORE INTO dbrole (role) VALUES (%(role)s);

-- name: record_migration
INSERT INTO schema_migration (version, name) VALUES (%(version)s, %(name)s);

-- name: clear_dbversion
DELETE FROM dbversion;

-- name: set_dbversion
INSERT INTO dbversion (schema_version) VALUES (%(version)s);

-- name: database_exists
SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = %(name)s;

-- name: server_version
SELECT VERSION() AS version;

-- name: upgrade_lock_try
-- A server-wide named lock, held by this connection until released or closed.
SELECT GET_LOCK(%(name)s, %(wait_s)s) AS granted;

-- name: upgrade_lock_holder
SELECT IS_USED_LOCK(%(name)s) AS connection_id;

-- name: upgrade_lock_release
SELECT RELEASE_LOCK(%(name)s) AS released;

-- name: text_column_limits
SELECT table_name AS tbl, column_name AS col, character_maximum_length AS n
FROM information_schema.columns
WHERE table_schema = DATABASE() AND character_maximum_length IS NOT NULL
  AND data_type IN ('varchar', 'char');

-- name: wsrep_on
-- 'ON' on a Galera node; no row (MySQL) or 'OFF' elsewhere.
SHOW VARIABLES LIKE 'wsrep_on';

-- name: wsrep_node_status
-- A Galera node's own view: its state (Synced, Joining, Donor/Desynced...) and the
-- cluster's size.
SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size');

-- name: lease_lock_table
-- The upgrade lock on a Galera cluster, where GET_LOCK is local to one node: a row that
-- one holder owns until it releases it or its lease runs out. Not a migration: it must
-- exist before the first one runs.
CREATE TABLE IF NOT EXISTS schema_upgrade_lock (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    holder VARCHAR(255) NOT NULL,
    expires DATETIME(6) NOT NULL
) ENGINE=InnoDB;

-- name: lease_lock_take
-- Takes the lock if free or expired; a live holder's row is left unchanged. (holder is
-- assigned before expires, so both IFs read the old expires.)
INSERT INTO schema_upgrade_lock (name, holder, expires)
VALUES (%(name)s, %(holder)s, NOW(6) + INTERVAL %(lease_s)s SECOND)
ON DUPLICATE KEY UPDATE
    holder = IF(expires < NOW(6), VALUES(holder), holder),
    expires = IF(expires < NOW(6), VALUES(expires), expires);

-- name: lease_lock_holder
SELECT holder, expires FROM schema_upgrade_lock WHERE name = %(name)s;

-- name: lease_lock_renew
UPDATE schema_upgrade_lock SET expires = NOW(6) + INTERVAL %(lease_s)s SECOND
WHERE name = %(name)s AND holder = %(holder)s;

-- name: lease_lock_release
DELETE FROM schema_upgrade_lock WHERE name = %(name)s AND holder = %(holder)s;
