-- name: schema_version
SELECT schema_version FROM dbversion ORDER BY schema_version DESC LIMIT 1;

-- name: dbversion_table_exists
SELECT COUNT(*) AS n FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name = 'dbversion';

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
