-- The operators' console (issue 20): its users (passwords only as salted scrypt hashes), the
-- sessions they hold (the cookie carries a random token signed with the console's key; only
-- the token's SHA-256 is stored), the key, and the audit of every write made through it.

CREATE TABLE console_user (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    role VARCHAR(16) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT console_user_role CHECK (role IN ('viewer', 'operator', 'admin'))
) ENGINE=InnoDB;

CREATE TABLE console_session (
    token_sha256 CHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    user VARCHAR(64) NOT NULL,
    csrf CHAR(64) CHARACTER SET ascii NOT NULL,
    remote VARCHAR(64) NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at DATETIME(6) NOT NULL,
    KEY console_session_expires (expires_at),
    CONSTRAINT console_session_user FOREIGN KEY (user) REFERENCES console_user (name) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE console_key (
    id TINYINT NOT NULL PRIMARY KEY,
    secret CHAR(64) CHARACTER SET ascii NOT NULL
) ENGINE=InnoDB;

CREATE TABLE console_audit (
    audit_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    user VARCHAR(64) NULL,
    action VARCHAR(64) NOT NULL,
    params VARCHAR(1024) NOT NULL,
    remote VARCHAR(64) NULL,
    ok TINYINT(1) NOT NULL,
    result VARCHAR(1024) NOT NULL,
    KEY console_audit_at (at)
) ENGINE=InnoDB;
