-- PSPS loading configurations (REFERENCE 11 and the operators' habits): what to load, from
-- which DVO database, into which DataStore product, over which part of the sky.

-- role: ipptopsps
CREATE TABLE psps_config (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    datastore_product VARCHAR(64) NOT NULL,
    datastore_type VARCHAR(16) NOT NULL,
    datastore_publish TINYINT NOT NULL,
    dvo_label VARCHAR(64) NOT NULL,
    dvo_location VARCHAR(512) NOT NULL,
    ra_min DOUBLE NOT NULL,
    ra_max DOUBLE NOT NULL,
    dec_min DOUBLE NOT NULL,
    dec_max DOUBLE NOT NULL,
    box_size_deg DOUBLE NOT NULL,
    epoch DATETIME NOT NULL,
    survey_id SMALLINT NOT NULL,
    batch_types VARCHAR(32) NOT NULL,
    test_mode TINYINT NOT NULL,
    deletion_policy VARCHAR(255) NOT NULL,
    active TINYINT NOT NULL,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;
