-- Following published batches through PSPS (odm_poller), deleting their copies
-- (batch_cleaner), and the metrics agent's totals and time series.

-- role: ipptopsps
ALTER TABLE psps_batch
    ADD COLUMN odm_status VARCHAR(16) NULL,
    ADD COLUMN odm_checked_at DATETIME(6) NULL,
    ADD COLUMN odm_done TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN cleaned TINYINT NOT NULL DEFAULT 0,
    ADD KEY psps_batch_poll (config, odm_done, loaded_to_datastore, batch_id),
    ADD KEY psps_batch_clean (config, cleaned, batch_id),
    ADD KEY psps_batch_published (config, type, loaded_to_datastore_at);

-- role: both
-- Site-wide totals of the agents' counters (<agent>.<counter>), added to at every heartbeat
-- (in the database each agent registers in).
CREATE TABLE metrics_counter (
    name VARCHAR(128) NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL DEFAULT 0,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;

-- role: ipptopsps
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

-- The loading summary kept current by triggers, so ippctl metrics reads a few hundred rows
-- whatever the number of batches: batches per (config, type, stage, outcome), and batches
-- published per clock hour with their detections.
CREATE TABLE psps_batch_count (
    config VARCHAR(64) NOT NULL,
    type CHAR(2) NOT NULL,
    stage VARCHAR(24) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    batches BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (config, type, stage, outcome)
) ENGINE=InnoDB;

CREATE TABLE psps_batch_hourly (
    config VARCHAR(64) NOT NULL,
    type CHAR(2) NOT NULL,
    hour DATETIME NOT NULL,
    published BIGINT NOT NULL DEFAULT 0,
    detections BIGINT NOT NULL DEFAULT 0,
    last_published DATETIME(6) NULL,
    PRIMARY KEY (config, type, hour)
) ENGINE=InnoDB;

INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
SELECT config, type, 'processed' AS stage, processed AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'loaded_to_datastore' AS stage, loaded_to_datastore AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'loaded_to_odm' AS stage, loaded_to_odm AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'merge_worthy' AS stage, merge_worthy AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'merged' AS stage, merged AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'deleted_datastore' AS stage, deleted_datastore AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'deleted_dxlayer' AS stage, deleted_dxlayer AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome
UNION ALL SELECT config, type, 'deleted_local' AS stage, deleted_local AS outcome, COUNT(*) FROM psps_batch GROUP BY config, type, outcome;

INSERT INTO psps_batch_hourly (config, type, hour, published, detections, last_published)
SELECT config, type, TIMESTAMP(DATE(b.loaded_to_datastore_at), SEC_TO_TIME(HOUR(b.loaded_to_datastore_at) * 3600)), COUNT(*), SUM(detections),
       MAX(loaded_to_datastore_at)
FROM psps_batch b WHERE b.loaded_to_datastore = 'succeeded' AND b.loaded_to_datastore_at IS NOT NULL
GROUP BY config, type, TIMESTAMP(DATE(b.loaded_to_datastore_at), SEC_TO_TIME(HOUR(b.loaded_to_datastore_at) * 3600));

DELIMITER $$

CREATE TRIGGER psps_batch_counted AFTER INSERT ON psps_batch FOR EACH ROW
BEGIN
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'processed', NEW.processed, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'loaded_to_datastore', NEW.loaded_to_datastore, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'loaded_to_odm', NEW.loaded_to_odm, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'merge_worthy', NEW.merge_worthy, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'merged', NEW.merged, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_datastore', NEW.deleted_datastore, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_dxlayer', NEW.deleted_dxlayer, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_local', NEW.deleted_local, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    IF NEW.loaded_to_datastore = 'succeeded' AND NEW.loaded_to_datastore_at IS NOT NULL THEN
        INSERT INTO psps_batch_hourly (config, type, hour, published, detections, last_published)
        VALUES (NEW.config, NEW.type, TIMESTAMP(DATE(NEW.loaded_to_datastore_at), SEC_TO_TIME(HOUR(NEW.loaded_to_datastore_at) * 3600)), 1, NEW.detections,
                NEW.loaded_to_datastore_at)
        ON DUPLICATE KEY UPDATE published = published + 1,
            detections = detections + VALUES(detections),
            last_published = GREATEST(last_published, VALUES(last_published));
    END IF;
END$$

CREATE TRIGGER psps_batch_recounted AFTER UPDATE ON psps_batch FOR EACH ROW
BEGIN
    IF NOT (NEW.processed <=> OLD.processed) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'processed'
      AND outcome = OLD.processed;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'processed', NEW.processed, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.loaded_to_datastore <=> OLD.loaded_to_datastore) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'loaded_to_datastore'
      AND outcome = OLD.loaded_to_datastore;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'loaded_to_datastore', NEW.loaded_to_datastore, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.loaded_to_odm <=> OLD.loaded_to_odm) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'loaded_to_odm'
      AND outcome = OLD.loaded_to_odm;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'loaded_to_odm', NEW.loaded_to_odm, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.merge_worthy <=> OLD.merge_worthy) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'merge_worthy'
      AND outcome = OLD.merge_worthy;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'merge_worthy', NEW.merge_worthy, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.merged <=> OLD.merged) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'merged'
      AND outcome = OLD.merged;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'merged', NEW.merged, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.deleted_datastore <=> OLD.deleted_datastore) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_datastore'
      AND outcome = OLD.deleted_datastore;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_datastore', NEW.deleted_datastore, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.deleted_dxlayer <=> OLD.deleted_dxlayer) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_dxlayer'
      AND outcome = OLD.deleted_dxlayer;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_dxlayer', NEW.deleted_dxlayer, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF NOT (NEW.deleted_local <=> OLD.deleted_local) THEN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_local'
      AND outcome = OLD.deleted_local;
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES (NEW.config, NEW.type, 'deleted_local', NEW.deleted_local, 1)
    ON DUPLICATE KEY UPDATE batches = batches + 1;
    END IF;
    IF (OLD.loaded_to_datastore = 'succeeded' AND OLD.loaded_to_datastore_at IS NOT NULL) AND NOT (NEW.loaded_to_datastore = 'succeeded' AND NEW.loaded_to_datastore_at IS NOT NULL) THEN
        UPDATE psps_batch_hourly SET published = published - 1,
            detections = detections - OLD.detections
        WHERE config = OLD.config AND type = OLD.type AND hour = TIMESTAMP(DATE(OLD.loaded_to_datastore_at), SEC_TO_TIME(HOUR(OLD.loaded_to_datastore_at) * 3600));
    END IF;
    IF (NEW.loaded_to_datastore = 'succeeded' AND NEW.loaded_to_datastore_at IS NOT NULL) AND NOT (OLD.loaded_to_datastore = 'succeeded' AND OLD.loaded_to_datastore_at IS NOT NULL) THEN
        INSERT INTO psps_batch_hourly (config, type, hour, published, detections, last_published)
        VALUES (NEW.config, NEW.type, TIMESTAMP(DATE(NEW.loaded_to_datastore_at), SEC_TO_TIME(HOUR(NEW.loaded_to_datastore_at) * 3600)), 1, NEW.detections,
                NEW.loaded_to_datastore_at)
        ON DUPLICATE KEY UPDATE published = published + 1,
            detections = detections + VALUES(detections),
            last_published = GREATEST(last_published, VALUES(last_published));
    END IF;
END$$

CREATE TRIGGER psps_batch_uncounted AFTER DELETE ON psps_batch FOR EACH ROW
BEGIN
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'processed'
      AND outcome = OLD.processed;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'loaded_to_datastore'
      AND outcome = OLD.loaded_to_datastore;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'loaded_to_odm'
      AND outcome = OLD.loaded_to_odm;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'merge_worthy'
      AND outcome = OLD.merge_worthy;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'merged'
      AND outcome = OLD.merged;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_datastore'
      AND outcome = OLD.deleted_datastore;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_dxlayer'
      AND outcome = OLD.deleted_dxlayer;
    UPDATE psps_batch_count SET batches = batches - 1
    WHERE config = OLD.config AND type = OLD.type AND stage = 'deleted_local'
      AND outcome = OLD.deleted_local;
    IF OLD.loaded_to_datastore = 'succeeded' AND OLD.loaded_to_datastore_at IS NOT NULL THEN
        UPDATE psps_batch_hourly SET published = published - 1,
            detections = detections - OLD.detections
        WHERE config = OLD.config AND type = OLD.type AND hour = TIMESTAMP(DATE(OLD.loaded_to_datastore_at), SEC_TO_TIME(HOUR(OLD.loaded_to_datastore_at) * 3600));
    END IF;
END$$

DELIMITER ;
