-- Credentials (issue 32).
-- Each mirror source's own DataStore token, sent to that source's origin only (set from a
-- file by `ippctl dist source add|token ... --token-file F`, never shown).
ALTER TABLE rcDestination ADD COLUMN token VARCHAR(1024) NULL;

-- Console logins counted before the password is checked, in the database so that every
-- console process shares the count: one row per scope (an address and user pair, a user,
-- an address) and window.
CREATE TABLE console_login_attempt (
    scope VARCHAR(200) NOT NULL PRIMARY KEY,
    window_start DATETIME(6) NOT NULL,
    attempts INT NOT NULL,
    KEY console_login_attempt_window (window_start)
) ENGINE=InnoDB;
