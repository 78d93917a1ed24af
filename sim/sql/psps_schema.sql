-- The PSPS stand-in's own bookkeeping (database psps_db_name; the PSPS tables themselves are
-- made from the VOTable files by sim/psps/tables.py).
CREATE TABLE IF NOT EXISTS dx_batch (
    name VARCHAR(128) NOT NULL PRIMARY KEY,
    product VARCHAR(64) NOT NULL,
    type CHAR(2) NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'new',
    failed_stage VARCHAR(16) NULL,
    reason VARCHAR(1024) NULL,
    detections BIGINT NOT NULL DEFAULT 0,
    copy_path VARCHAR(512) NULL,
    copy_deleted TINYINT NOT NULL DEFAULT 0,
    tries INT NOT NULL DEFAULT 0,
    seen_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    next_try_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    loaded_at DATETIME(6) NULL,
    merge_worthy_at DATETIME(6) NULL,
    merged_at DATETIME(6) NULL,
    failed_at DATETIME(6) NULL,
    deleted_at DATETIME(6) NULL,
    KEY dx_batch_work (status, next_try_at, seen_at)
) ENGINE=InnoDB;
