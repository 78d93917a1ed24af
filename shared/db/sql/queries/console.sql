-- The operators' console: users, sessions, its key, the audit.

-- name: console_user_add
INSERT INTO console_user (name, role, password_hash) VALUES (%(name)s, %(role)s, %(hash)s);

-- name: console_user_get
SELECT name, role, password_hash FROM console_user WHERE name = %(name)s;

-- name: console_users
SELECT name, role, created_at FROM console_user ORDER BY name;

-- name: console_key_get
SELECT secret FROM console_key WHERE id = 1;

-- name: console_key_add
INSERT IGNORE INTO console_key (id, secret) VALUES (1, %(secret)s);

-- name: console_session_add
INSERT INTO console_session (token_sha256, user, csrf, remote, expires_at)
VALUES (%(token)s, %(user)s, %(csrf)s, %(remote)s, NOW(6) + INTERVAL %(hours)s HOUR);

-- name: console_session_get
SELECT s.user, s.csrf, u.role FROM console_session s JOIN console_user u ON u.name = s.user
WHERE s.token_sha256 = %(token)s AND s.expires_at > NOW(6);

-- name: console_session_end
DELETE FROM console_session WHERE token_sha256 = %(token)s;

-- name: console_sessions_expired
DELETE FROM console_session WHERE expires_at <= NOW(6);

-- name: console_audit_add
INSERT INTO console_audit (user, action, params, remote, ok, result)
VALUES (%(user)s, %(action)s, %(params)s, %(remote)s, %(ok)s, %(result)s);

-- name: console_audit_recent
SELECT audit_id, at, user, action, params, remote, ok, result FROM console_audit
ORDER BY audit_id DESC LIMIT %(limit)s;


-- name: console_login_count
-- One more login attempt in a scope (an address and user, a user, an address), counted
-- before the password is checked: a new window when the last one is over. The row lock
-- makes concurrent attempts, of this console process or another, count one after another.
INSERT INTO console_login_attempt (scope, window_start, attempts) VALUES (%(scope)s, NOW(6), 1)
ON DUPLICATE KEY UPDATE
    attempts = IF(window_start < NOW(6) - INTERVAL %(window_s)s SECOND, 1, attempts + 1),
    window_start = IF(window_start < NOW(6) - INTERVAL %(window_s)s SECOND, NOW(6), window_start);

-- name: console_login_attempts
SELECT attempts FROM console_login_attempt WHERE scope = %(scope)s;

-- name: console_login_forget
-- Windows that are over, a bounded number at a time (attempts name users that need not exist).
DELETE FROM console_login_attempt WHERE window_start < NOW(6) - INTERVAL %(window_s)s SECOND LIMIT 1000;
