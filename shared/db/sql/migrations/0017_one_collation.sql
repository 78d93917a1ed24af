-- One collation for every text column: utf8mb4_general_ci, the one MariaDB gives a client
-- that connects with utf8mb4 (collation_connection). The IPP's queries mix columns with
-- CAST(... AS CHAR) and literals in a UNION (ippTools/share/disttool_pending_raw.sql): with
-- the columns in utf8mb4_unicode_ci, as before, such a client got "Illegal mix of
-- collations". This rebuilds every table once (on a large database, plan for it); the
-- columns that were ascii stay ascii.
-- role: both
ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
-- console_session.user refers to console_user.name: the key is dropped while both change.
ALTER TABLE console_session DROP FOREIGN KEY console_session_user;
ALTER TABLE addRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: both
ALTER TABLE agent_control CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
ALTER TABLE camMask CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE camProcessedExp CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE camRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipBackgroundImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipBackgroundRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipMask CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipProcessedImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE console_audit CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE console_user CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: both
ALTER TABLE dbversion CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
ALTER TABLE diffInputSkyfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE diffRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE diffSkyfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE distComponent CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE distRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE distTarget CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE dsFile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE dsFileset CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE dsFileType CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE dsProduct CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE fakeMask CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE fakeProcessedImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE fakeRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE Label CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE magicDSFile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE magicDSRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE magicRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: both
ALTER TABLE metrics_counter CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: ipptopsps
ALTER TABLE metrics_sample CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_batch CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_batch_count CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_batch_hourly CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_config CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_item CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE psps_stripe CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
ALTER TABLE rawExp CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE rawImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE rcDestination CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE rcDSFileset CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE rcInterest CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE rcRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: both
ALTER TABLE schema_migration CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
ALTER TABLE skycell CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE stackInputSkyfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE stackRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE stackSumSkyfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE update_wait CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE warpImfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE warpMask CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE warpRun CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE warpSkyCellMap CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE warpSkyfile CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE chipRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE camRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE warpRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE diffRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE stackRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE distRun MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE rcDestination MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
-- role: ipptopsps
ALTER TABLE psps_item MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
ALTER TABLE psps_stripe MODIFY owner CHAR(36) CHARACTER SET ascii NULL;
-- role: both
-- the tables that hold ascii keys too wide for utf8mb4 indexes: their other text columns
ALTER TABLE clients
    MODIFY agent VARCHAR(64) COLLATE utf8mb4_general_ci NOT NULL,
    MODIFY host VARCHAR(255) COLLATE utf8mb4_general_ci NOT NULL,
    MODIFY config VARCHAR(64) COLLATE utf8mb4_general_ci NOT NULL DEFAULT '',
    MODIFY version VARCHAR(32) COLLATE utf8mb4_general_ci NOT NULL,
    MODIFY status ENUM('running','paused','stopping','stopped','dead') COLLATE utf8mb4_general_ci NOT NULL DEFAULT 'running',
    MODIFY command ENUM('pause','resume','stop') COLLATE utf8mb4_general_ci NULL,
    MODIFY current_item VARCHAR(255) COLLATE utf8mb4_general_ci NULL,
    MODIFY counters TEXT COLLATE utf8mb4_general_ci NULL,
    MODIFY last_error TEXT COLLATE utf8mb4_general_ci NULL,
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
-- role: processing
ALTER TABLE storage_volume
    MODIFY host VARCHAR(255) COLLATE utf8mb4_general_ci NOT NULL DEFAULT '',
    MODIFY root VARCHAR(1024) COLLATE utf8mb4_general_ci NOT NULL,
    MODIFY state ENUM('up','down','lost') COLLATE utf8mb4_general_ci NOT NULL DEFAULT 'up',
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE console_session
    MODIFY user VARCHAR(64) COLLATE utf8mb4_general_ci NOT NULL,
    MODIFY remote VARCHAR(64) COLLATE utf8mb4_general_ci NULL,
    DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE storage_object DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE storage_instance DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE console_key DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
ALTER TABLE console_session ADD CONSTRAINT console_session_user FOREIGN KEY (user)
    REFERENCES console_user (name) ON DELETE CASCADE;
