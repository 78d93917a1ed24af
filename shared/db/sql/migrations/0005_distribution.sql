-- The DataStore (REFERENCE 6) and distribution (REFERENCE 7).
--
-- dsFile.uri (the file's neb:// key in this site's storage) is the project's addition: the
-- server serves exactly the files registered here, from storage, and nothing else on disk.
-- dsFileset.hide = 1 hides a fileset from listings (ippctl ds remove without --rm).

CREATE TABLE dsProduct (
    prod_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    prod_name VARCHAR(64) NOT NULL,
    last_update DATETIME NULL,
    last_fs VARCHAR(128) NULL,
    type VARCHAR(16) NOT NULL,
    description VARCHAR(255) NULL,
    reg_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    prod_col_0 VARCHAR(32) NULL,
    prod_col_1 VARCHAR(32) NULL,
    prod_col_2 VARCHAR(32) NULL,
    prod_col_3 VARCHAR(32) NULL,
    prod_col_4 VARCHAR(32) NULL,
    prod_col_5 VARCHAR(32) NULL,
    prod_col_6 VARCHAR(32) NULL,
    prod_col_7 VARCHAR(32) NULL,
    UNIQUE KEY dsProduct_name (prod_name)
) ENGINE=InnoDB;

CREATE TABLE dsFileset (
    fileset_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    prod_id BIGINT NOT NULL,
    fileset_name VARCHAR(128) NOT NULL,
    reg_time DATETIME NOT NULL,
    hide TINYINT NOT NULL DEFAULT 0,
    type VARCHAR(16) NOT NULL DEFAULT 'notset',
    prod_col_0 VARCHAR(64) NULL,
    prod_col_1 VARCHAR(64) NULL,
    prod_col_2 VARCHAR(64) NULL,
    prod_col_3 VARCHAR(64) NULL,
    prod_col_4 VARCHAR(64) NULL,
    prod_col_5 VARCHAR(64) NULL,
    prod_col_6 VARCHAR(64) NULL,
    prod_col_7 VARCHAR(64) NULL,
    UNIQUE KEY dsFileset_name (prod_id, fileset_name),
    CONSTRAINT dsFileset_product FOREIGN KEY (prod_id) REFERENCES dsProduct (prod_id)
) ENGINE=InnoDB;

CREATE TABLE dsFile (
    file_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    fileset_id BIGINT NOT NULL,
    file_name VARCHAR(255) NOT NULL,
    bytes BIGINT NOT NULL,
    md5sum CHAR(32) NOT NULL,
    type VARCHAR(16) NOT NULL,
    uri VARCHAR(512) NOT NULL,
    UNIQUE KEY dsFile_name (fileset_id, file_name),
    CONSTRAINT dsFile_fileset FOREIGN KEY (fileset_id) REFERENCES dsFileset (fileset_id)
) ENGINE=InnoDB;

CREATE TABLE distTarget (
    target_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    dist_group VARCHAR(64) NULL,
    filter VARCHAR(64) NULL,
    stage VARCHAR(16) NOT NULL,
    clean TINYINT NOT NULL DEFAULT 0,
    state VARCHAR(16) NOT NULL DEFAULT 'active',
    product VARCHAR(64) NOT NULL,
    KEY distTarget_state (state)
) ENGINE=InnoDB;

CREATE TABLE distRun (
    dist_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    target_id BIGINT NULL,
    stage VARCHAR(16) NOT NULL,
    stage_id BIGINT NOT NULL,
    label VARCHAR(64) NULL,
    outroot VARCHAR(255) NULL,
    clean TINYINT NOT NULL DEFAULT 0,
    state VARCHAR(16) NOT NULL DEFAULT 'new',
    fault SMALLINT NOT NULL DEFAULT 0,
    product VARCHAR(64) NOT NULL,
    fileset_name VARCHAR(128) NULL,
    note VARCHAR(255) NULL,
    registered DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    owner CHAR(36) CHARACTER SET ascii NULL,
    claimed_at DATETIME(6) NULL,
    UNIQUE KEY distRun_run (product, stage, stage_id, clean),
    KEY distRun_state (state, dist_id),
    KEY distRun_owner (owner)
) ENGINE=InnoDB;

CREATE TABLE distComponent (
    dist_id BIGINT NOT NULL,
    component VARCHAR(64) NOT NULL,
    bytes BIGINT NULL,
    md5sum CHAR(32) NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'new',
    name VARCHAR(255) NULL,
    fault SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (dist_id, component),
    CONSTRAINT distComponent_run FOREIGN KEY (dist_id) REFERENCES distRun (dist_id)
) ENGINE=InnoDB;

-- Receiving side (at the mirror).

CREATE TABLE rcDestination (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    status_uri VARCHAR(255) NOT NULL,
    product VARCHAR(64) NOT NULL,
    last_fileset VARCHAR(128) NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'active',
    note VARCHAR(255) NULL,
    owner CHAR(36) CHARACTER SET ascii NULL,
    claimed_at DATETIME(6) NULL,
    KEY rcDestination_owner (owner)
) ENGINE=InnoDB;

CREATE TABLE rcDSFileset (
    source VARCHAR(64) NOT NULL,
    name VARCHAR(128) NOT NULL,
    state VARCHAR(16) NOT NULL,
    fault SMALLINT NOT NULL DEFAULT 0,
    note VARCHAR(1024) NULL,
    updated DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (source, name)
) ENGINE=InnoDB;
