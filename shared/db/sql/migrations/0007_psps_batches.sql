-- PSPS loading: the sky stripes loaders reserve, the queued items, and the batches built.

-- role: ipptopsps
CREATE TABLE psps_stripe (
    stripe_key BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    config VARCHAR(64) NOT NULL,
    stripe INT NOT NULL,
    ra_min DOUBLE NOT NULL,
    ra_max DOUBLE NOT NULL,
    owner CHAR(36) CHARACTER SET ascii NULL,
    claimed_at DATETIME(6) NULL,
    UNIQUE KEY psps_stripe_unique (config, stripe),
    KEY psps_stripe_owner (owner)
) ENGINE=InnoDB;

CREATE TABLE psps_item (
    item_key BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    config VARCHAR(64) NOT NULL,
    type CHAR(2) NOT NULL,
    item_id BIGINT NOT NULL,
    stripe INT NOT NULL,
    box INT NOT NULL,
    ra DOUBLE NOT NULL,
    decl DOUBLE NOT NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'new',
    attempts INT NOT NULL DEFAULT 0,
    batch_id BIGINT NULL,
    note VARCHAR(1024) NULL,
    queued_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    owner CHAR(36) CHARACTER SET ascii NULL,
    claimed_at DATETIME(6) NULL,
    UNIQUE KEY psps_item_unique (config, type, item_id),
    KEY psps_item_work (config, stripe, state, box, item_key),
    KEY psps_item_owner (owner)
) ENGINE=InnoDB;

CREATE TABLE psps_batch (
    batch_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name CHAR(9) NULL,
    config VARCHAR(64) NOT NULL,
    type CHAR(2) NOT NULL,
    item_id BIGINT NOT NULL,
    detections BIGINT NOT NULL DEFAULT 0,
    fits_path VARCHAR(512) NULL,
    fileset VARCHAR(128) NULL,
    note VARCHAR(1024) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    processed VARCHAR(16) NOT NULL DEFAULT 'pending',
    processed_at DATETIME(6) NULL,
    loaded_to_datastore VARCHAR(16) NOT NULL DEFAULT 'pending',
    loaded_to_datastore_at DATETIME(6) NULL,
    loaded_to_odm VARCHAR(16) NOT NULL DEFAULT 'pending',
    loaded_to_odm_at DATETIME(6) NULL,
    merge_worthy VARCHAR(16) NOT NULL DEFAULT 'pending',
    merge_worthy_at DATETIME(6) NULL,
    merged VARCHAR(16) NOT NULL DEFAULT 'pending',
    merged_at DATETIME(6) NULL,
    deleted_datastore VARCHAR(16) NOT NULL DEFAULT 'pending',
    deleted_datastore_at DATETIME(6) NULL,
    deleted_dxlayer VARCHAR(16) NOT NULL DEFAULT 'pending',
    deleted_dxlayer_at DATETIME(6) NULL,
    deleted_local VARCHAR(16) NOT NULL DEFAULT 'pending',
    deleted_local_at DATETIME(6) NULL,
    purged TINYINT NOT NULL DEFAULT 0,
    UNIQUE KEY psps_batch_name (name),
    KEY psps_batch_config (config, type, batch_id),
    KEY psps_batch_item (config, type, item_id)
) ENGINE=InnoDB;
