-- The tables the metrics agent writes into the czartool database (setting czartool_dsn).
-- Seed 003: metrics.py stores ippToPsps' "vital statistics" in the czartool database, whose
-- real schema is not public; these are this project's own, documented in docs/formats.md for
-- dashboards to read. One row per sample, config and batch type (and stage).

CREATE TABLE IF NOT EXISTS ipptopsps_rates (
    taken_at DATETIME(6) NOT NULL,
    config VARCHAR(64) NOT NULL,
    batch_type CHAR(2) NOT NULL,
    batches_per_hour DOUBLE NOT NULL,
    last_24_hours INT NOT NULL,
    per_day_this_week DOUBLE NOT NULL,
    total_detections BIGINT NOT NULL,
    last_published DATETIME NULL,
    dvo INT NOT NULL,
    PRIMARY KEY (config, batch_type, taken_at),
    KEY ipptopsps_rates_taken (taken_at)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS ipptopsps_stages (
    taken_at DATETIME(6) NOT NULL,
    config VARCHAR(64) NOT NULL,
    batch_type CHAR(2) NOT NULL,
    stage VARCHAR(32) NOT NULL,
    pending INT NOT NULL,
    succeeded INT NOT NULL,
    failed INT NOT NULL,
    PRIMARY KEY (config, batch_type, stage, taken_at),
    KEY ipptopsps_stages_taken (taken_at)
) ENGINE=InnoDB;
