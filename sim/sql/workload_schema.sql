-- Synthetic workload tables (tests and benchmarks only; not part of the IPP schema).
CREATE TABLE IF NOT EXISTS sim_work (
    item_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    state ENUM('pending', 'done', 'failed') NOT NULL DEFAULT 'pending',
    duration_ms INT NOT NULL DEFAULT 0,
    owner CHAR(36) CHARACTER SET ascii NULL,
    claimed_at DATETIME(6) NULL,
    note VARCHAR(255) NULL,
    KEY sim_work_pending (state, owner, item_id),
    KEY sim_work_owner (owner)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS sim_work_log (
    log_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    item_id INT NOT NULL,
    client_id CHAR(36) CHARACTER SET ascii NOT NULL,
    done_at DATETIME(6) NOT NULL DEFAULT NOW(6),
    KEY sim_work_log_item (item_id)
) ENGINE=InnoDB;
