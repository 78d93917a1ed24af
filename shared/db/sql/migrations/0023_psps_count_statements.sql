-- The psps_batch count triggers (migration 0008) with fewer statements per row (issue 30).
-- A stage that changed was one UPDATE of its old outcome's count and one INSERT of its new
-- one: an ODM answer moving three stages made six statements per batch, and the database's
-- share of a status check (240 us a batch, 100 batches to the statement) set the poller's pace. Now one statement
-- per changed stage moves both counts (-1 and +1 in one INSERT ... ON DUPLICATE KEY UPDATE),
-- and an insert or a delete is one statement for its eight stages. The hourly table's
-- statements are unchanged. Same counts: tests/test_db.py checks them against a GROUP BY.
-- role: ipptopsps
DROP TRIGGER IF EXISTS psps_batch_counted;
DROP TRIGGER IF EXISTS psps_batch_recounted;
DROP TRIGGER IF EXISTS psps_batch_uncounted;

DELIMITER $$

CREATE TRIGGER psps_batch_counted AFTER INSERT ON psps_batch FOR EACH ROW
BEGIN
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES
        (NEW.config, NEW.type, 'processed', NEW.processed, 1),
        (NEW.config, NEW.type, 'loaded_to_datastore', NEW.loaded_to_datastore, 1),
        (NEW.config, NEW.type, 'loaded_to_odm', NEW.loaded_to_odm, 1),
        (NEW.config, NEW.type, 'merge_worthy', NEW.merge_worthy, 1),
        (NEW.config, NEW.type, 'merged', NEW.merged, 1),
        (NEW.config, NEW.type, 'deleted_datastore', NEW.deleted_datastore, 1),
        (NEW.config, NEW.type, 'deleted_dxlayer', NEW.deleted_dxlayer, 1),
        (NEW.config, NEW.type, 'deleted_local', NEW.deleted_local, 1)
    ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
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
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'processed', OLD.processed, -1), (NEW.config, NEW.type, 'processed', NEW.processed, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.loaded_to_datastore <=> OLD.loaded_to_datastore) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'loaded_to_datastore', OLD.loaded_to_datastore, -1), (NEW.config, NEW.type, 'loaded_to_datastore', NEW.loaded_to_datastore, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.loaded_to_odm <=> OLD.loaded_to_odm) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'loaded_to_odm', OLD.loaded_to_odm, -1), (NEW.config, NEW.type, 'loaded_to_odm', NEW.loaded_to_odm, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.merge_worthy <=> OLD.merge_worthy) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'merge_worthy', OLD.merge_worthy, -1), (NEW.config, NEW.type, 'merge_worthy', NEW.merge_worthy, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.merged <=> OLD.merged) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'merged', OLD.merged, -1), (NEW.config, NEW.type, 'merged', NEW.merged, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.deleted_datastore <=> OLD.deleted_datastore) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'deleted_datastore', OLD.deleted_datastore, -1), (NEW.config, NEW.type, 'deleted_datastore', NEW.deleted_datastore, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.deleted_dxlayer <=> OLD.deleted_dxlayer) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'deleted_dxlayer', OLD.deleted_dxlayer, -1), (NEW.config, NEW.type, 'deleted_dxlayer', NEW.deleted_dxlayer, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    END IF;
    IF NOT (NEW.deleted_local <=> OLD.deleted_local) THEN
        INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
        VALUES (OLD.config, OLD.type, 'deleted_local', OLD.deleted_local, -1), (NEW.config, NEW.type, 'deleted_local', NEW.deleted_local, 1)
        ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
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
    INSERT INTO psps_batch_count (config, type, stage, outcome, batches)
    VALUES
        (OLD.config, OLD.type, 'processed', OLD.processed, -1),
        (OLD.config, OLD.type, 'loaded_to_datastore', OLD.loaded_to_datastore, -1),
        (OLD.config, OLD.type, 'loaded_to_odm', OLD.loaded_to_odm, -1),
        (OLD.config, OLD.type, 'merge_worthy', OLD.merge_worthy, -1),
        (OLD.config, OLD.type, 'merged', OLD.merged, -1),
        (OLD.config, OLD.type, 'deleted_datastore', OLD.deleted_datastore, -1),
        (OLD.config, OLD.type, 'deleted_dxlayer', OLD.deleted_dxlayer, -1),
        (OLD.config, OLD.type, 'deleted_local', OLD.deleted_local, -1)
    ON DUPLICATE KEY UPDATE batches = batches + VALUES(batches);
    IF OLD.loaded_to_datastore = 'succeeded' AND OLD.loaded_to_datastore_at IS NOT NULL THEN
        UPDATE psps_batch_hourly SET published = published - 1,
            detections = detections - OLD.detections
        WHERE config = OLD.config AND type = OLD.type AND hour = TIMESTAMP(DATE(OLD.loaded_to_datastore_at), SEC_TO_TIME(HOUR(OLD.loaded_to_datastore_at) * 3600));
    END IF;
END$$

DELIMITER ;
