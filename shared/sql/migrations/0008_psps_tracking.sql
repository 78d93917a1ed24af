-- Following published batches through PSPS (odm_poller), deleting their copies
-- (batch_cleaner), and the metrics agent's totals and time series.

ALTER TABLE psps_batch
    ADD COLUMN odm_status VARCHAR(16) NULL,
    ADD COLUMN odm_checked_at DATETIME(6) NULL,
    ADD COLUMN odm_done TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN cleaned TINYINT NOT NULL DEFAULT 0,
    ADD KEY psps_batch_poll (config, odm_done, loaded_to_datastore, batch_id),
    ADD KEY psps_batch_clean (config, cleaned, batch_id),
    ADD KEY psps_batch_stages (config, type, processed, loaded_to_datastore, loaded_to_odm,
                               merge_worthy, merged, deleted_datastore, deleted_dxlayer,
                               deleted_local, detections),
    ADD KEY psps_batch_published (config, type, loaded_to_datastore_at);

-- Site-wide totals of the agents' counters (<agent>.<counter>), added to at every heartbeat.
CREATE TABLE metrics_counter (
    name VARCHAR(128) NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;

-- The metrics agent's samples: one row per metric and label set per sampling pass.
CREATE TABLE metrics_sample (
    sample_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    taken_at DATETIME(6) NOT NULL,
    metric VARCHAR(64) NOT NULL,
    labels VARCHAR(255) NOT NULL,
    value DOUBLE NOT NULL,
    KEY metrics_sample_metric (metric, taken_at),
    KEY metrics_sample_taken (taken_at)
) ENGINE=InnoDB;
