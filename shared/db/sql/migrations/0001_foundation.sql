-- Foundation: schema version, agent clients and control flags, nebulous storage.
-- Statements end with ';' at the end of a line (the migration runner splits there).

-- role: both
-- As in the IPP: one row, schema_version and when it was set.
CREATE TABLE dbversion (
    schema_version INT NOT NULL,
    updated DATETIME(6) NOT NULL DEFAULT NOW(6)
) ENGINE=InnoDB;

CREATE TABLE schema_migration (
    version INT NOT NULL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    applied_at DATETIME(6) NOT NULL DEFAULT NOW(6)
) ENGINE=InnoDB;

-- One row per agent process start. heartbeat_at is always written with the database clock.
CREATE TABLE clients (
    client_id CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    agent VARCHAR(64) NOT NULL,
    host VARCHAR(255) NOT NULL,
    pid INT NOT NULL,
    config VARCHAR(64) NOT NULL DEFAULT '',
    version VARCHAR(32) NOT NULL,
    started_at DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    status ENUM('running', 'paused', 'stopping', 'stopped', 'dead') NOT NULL DEFAULT 'running',
    command ENUM('pause', 'resume', 'stop') NULL,
    command_at DATETIME(6) NULL,
    current_item VARCHAR(255) NULL,
    items_done BIGINT NOT NULL DEFAULT 0,
    items_failed BIGINT NOT NULL DEFAULT 0,
    counters TEXT NULL,
    last_error TEXT NULL,
    last_error_at DATETIME(6) NULL,
    ended_at DATETIME(6) NULL,
    KEY clients_status_heartbeat (status, heartbeat_at),
    KEY clients_agent_host (agent, host, config)
) ENGINE=InnoDB;

-- Standing pause/stop flags. '' in host or config means every host / every config.
CREATE TABLE agent_control (
    control_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    agent VARCHAR(64) NOT NULL,
    host VARCHAR(255) NOT NULL DEFAULT '',
    config VARCHAR(64) NOT NULL DEFAULT '',
    command ENUM('pause', 'stop') NOT NULL,
    set_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    set_by VARCHAR(255) NOT NULL DEFAULT '',
    UNIQUE KEY agent_control_scope (agent, host, config)
) ENGINE=InnoDB;

-- role: processing
-- Nebulous storage: a volume is a directory tree on some host; an object is a neb:// key
-- (its canonical path); an instance is one real file of an object on one volume.
CREATE TABLE storage_volume (
    vol_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(64) CHARACTER SET ascii NOT NULL,
    host VARCHAR(255) NOT NULL DEFAULT '',
    root VARCHAR(1024) NOT NULL,
    state ENUM('up', 'down', 'lost') NOT NULL DEFAULT 'up',
    allocate TINYINT NOT NULL DEFAULT 1,
    created_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    UNIQUE KEY storage_volume_name (name)
) ENGINE=InnoDB;

CREATE TABLE storage_object (
    obj_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ext_id VARCHAR(1000) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    bytes BIGINT NOT NULL,
    md5sum CHAR(32) CHARACTER SET ascii NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    UNIQUE KEY storage_object_ext_id (ext_id)
) ENGINE=InnoDB;

CREATE TABLE storage_instance (
    ins_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    obj_id BIGINT NOT NULL,
    vol_id INT NOT NULL,
    relpath VARCHAR(1000) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    UNIQUE KEY storage_instance_obj_vol (obj_id, vol_id),
    KEY storage_instance_vol (vol_id),
    CONSTRAINT storage_instance_obj FOREIGN KEY (obj_id) REFERENCES storage_object (obj_id),
    CONSTRAINT storage_instance_vol FOREIGN KEY (vol_id) REFERENCES storage_volume (vol_id)
) ENGINE=InnoDB;
