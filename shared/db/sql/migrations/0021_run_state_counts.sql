-- Runs per stage and state, kept by triggers (issue 30): the console refreshes its pipelines
-- every five seconds and the metrics agent samples them each pass, and a GROUP BY state over
-- every run of a stage costs in proportion to the runs (a million per stage at a site). The
-- count is spread over 16 shards of the run id so that agents finishing different runs at once
-- (on different Galera nodes too) seldom change the same row; a reader adds the shards up.
-- The triggers see every change, the IPP's own tools' included; they cost two row changes per
-- change of a run's state and nothing when a claim only sets the owner.
-- role: processing
CREATE TABLE run_state_count (
    stage VARCHAR(16) NOT NULL,
    state VARCHAR(64) NOT NULL,
    shard TINYINT NOT NULL,
    runs BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, state, shard)
) ENGINE=InnoDB;

INSERT INTO run_state_count (stage, state, shard, runs)
SELECT 'chip', state, chip_id % 16, COUNT(*) FROM chipRun GROUP BY state, chip_id % 16;

INSERT INTO run_state_count (stage, state, shard, runs)
SELECT 'camera', state, cam_id % 16, COUNT(*) FROM camRun GROUP BY state, cam_id % 16;

INSERT INTO run_state_count (stage, state, shard, runs)
SELECT 'warp', state, warp_id % 16, COUNT(*) FROM warpRun GROUP BY state, warp_id % 16;

INSERT INTO run_state_count (stage, state, shard, runs)
SELECT 'diff', state, diff_id % 16, COUNT(*) FROM diffRun GROUP BY state, diff_id % 16;

INSERT INTO run_state_count (stage, state, shard, runs)
SELECT 'stack', state, stack_id % 16, COUNT(*) FROM stackRun GROUP BY state, stack_id % 16;

DELIMITER $$

CREATE TRIGGER chipRun_counted AFTER INSERT ON chipRun FOR EACH ROW
BEGIN
    INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('chip', NEW.state, NEW.chip_id % 16, 1)
    ON DUPLICATE KEY UPDATE runs = runs + 1;
END$$

CREATE TRIGGER chipRun_recounted AFTER UPDATE ON chipRun FOR EACH ROW
BEGIN
    IF NOT (NEW.state <=> OLD.state) OR NEW.chip_id <> OLD.chip_id THEN
        UPDATE run_state_count SET runs = runs - 1
        WHERE stage = 'chip' AND state = OLD.state AND shard = OLD.chip_id % 16;
        INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('chip', NEW.state, NEW.chip_id % 16, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1;
    END IF;
END$$

CREATE TRIGGER chipRun_uncounted AFTER DELETE ON chipRun FOR EACH ROW
BEGIN
    UPDATE run_state_count SET runs = runs - 1
    WHERE stage = 'chip' AND state = OLD.state AND shard = OLD.chip_id % 16;
END$$

CREATE TRIGGER camRun_counted AFTER INSERT ON camRun FOR EACH ROW
BEGIN
    INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('camera', NEW.state, NEW.cam_id % 16, 1)
    ON DUPLICATE KEY UPDATE runs = runs + 1;
END$$

CREATE TRIGGER camRun_recounted AFTER UPDATE ON camRun FOR EACH ROW
BEGIN
    IF NOT (NEW.state <=> OLD.state) OR NEW.cam_id <> OLD.cam_id THEN
        UPDATE run_state_count SET runs = runs - 1
        WHERE stage = 'camera' AND state = OLD.state AND shard = OLD.cam_id % 16;
        INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('camera', NEW.state, NEW.cam_id % 16, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1;
    END IF;
END$$

CREATE TRIGGER camRun_uncounted AFTER DELETE ON camRun FOR EACH ROW
BEGIN
    UPDATE run_state_count SET runs = runs - 1
    WHERE stage = 'camera' AND state = OLD.state AND shard = OLD.cam_id % 16;
END$$

CREATE TRIGGER warpRun_counted AFTER INSERT ON warpRun FOR EACH ROW
BEGIN
    INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('warp', NEW.state, NEW.warp_id % 16, 1)
    ON DUPLICATE KEY UPDATE runs = runs + 1;
END$$

CREATE TRIGGER warpRun_recounted AFTER UPDATE ON warpRun FOR EACH ROW
BEGIN
    IF NOT (NEW.state <=> OLD.state) OR NEW.warp_id <> OLD.warp_id THEN
        UPDATE run_state_count SET runs = runs - 1
        WHERE stage = 'warp' AND state = OLD.state AND shard = OLD.warp_id % 16;
        INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('warp', NEW.state, NEW.warp_id % 16, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1;
    END IF;
END$$

CREATE TRIGGER warpRun_uncounted AFTER DELETE ON warpRun FOR EACH ROW
BEGIN
    UPDATE run_state_count SET runs = runs - 1
    WHERE stage = 'warp' AND state = OLD.state AND shard = OLD.warp_id % 16;
END$$

CREATE TRIGGER diffRun_counted AFTER INSERT ON diffRun FOR EACH ROW
BEGIN
    INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('diff', NEW.state, NEW.diff_id % 16, 1)
    ON DUPLICATE KEY UPDATE runs = runs + 1;
END$$

CREATE TRIGGER diffRun_recounted AFTER UPDATE ON diffRun FOR EACH ROW
BEGIN
    IF NOT (NEW.state <=> OLD.state) OR NEW.diff_id <> OLD.diff_id THEN
        UPDATE run_state_count SET runs = runs - 1
        WHERE stage = 'diff' AND state = OLD.state AND shard = OLD.diff_id % 16;
        INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('diff', NEW.state, NEW.diff_id % 16, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1;
    END IF;
END$$

CREATE TRIGGER diffRun_uncounted AFTER DELETE ON diffRun FOR EACH ROW
BEGIN
    UPDATE run_state_count SET runs = runs - 1
    WHERE stage = 'diff' AND state = OLD.state AND shard = OLD.diff_id % 16;
END$$

CREATE TRIGGER stackRun_counted AFTER INSERT ON stackRun FOR EACH ROW
BEGIN
    INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('stack', NEW.state, NEW.stack_id % 16, 1)
    ON DUPLICATE KEY UPDATE runs = runs + 1;
END$$

CREATE TRIGGER stackRun_recounted AFTER UPDATE ON stackRun FOR EACH ROW
BEGIN
    IF NOT (NEW.state <=> OLD.state) OR NEW.stack_id <> OLD.stack_id THEN
        UPDATE run_state_count SET runs = runs - 1
        WHERE stage = 'stack' AND state = OLD.state AND shard = OLD.stack_id % 16;
        INSERT INTO run_state_count (stage, state, shard, runs) VALUES ('stack', NEW.state, NEW.stack_id % 16, 1)
        ON DUPLICATE KEY UPDATE runs = runs + 1;
    END IF;
END$$

CREATE TRIGGER stackRun_uncounted AFTER DELETE ON stackRun FOR EACH ROW
BEGIN
    UPDATE run_state_count SET runs = runs - 1
    WHERE stage = 'stack' AND state = OLD.state AND shard = OLD.stack_id % 16;
END$$

DELIMITER ;
