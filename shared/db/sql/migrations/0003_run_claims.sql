-- Claims on processing runs: the cleanup and update agents take runs with
-- SELECT ... FOR UPDATE SKIP LOCKED and mark owner (a clients.client_id) and claimed_at.

ALTER TABLE chipRun ADD COLUMN owner CHAR(36) CHARACTER SET ascii NULL, ADD COLUMN claimed_at DATETIME(6) NULL, ADD KEY chipRun_owner (owner);
ALTER TABLE camRun ADD COLUMN owner CHAR(36) CHARACTER SET ascii NULL, ADD COLUMN claimed_at DATETIME(6) NULL, ADD KEY camRun_owner (owner);
ALTER TABLE warpRun ADD COLUMN owner CHAR(36) CHARACTER SET ascii NULL, ADD COLUMN claimed_at DATETIME(6) NULL, ADD KEY warpRun_owner (owner);
ALTER TABLE diffRun ADD COLUMN owner CHAR(36) CHARACTER SET ascii NULL, ADD COLUMN claimed_at DATETIME(6) NULL, ADD KEY diffRun_owner (owner);
ALTER TABLE stackRun ADD COLUMN owner CHAR(36) CHARACTER SET ascii NULL, ADD COLUMN claimed_at DATETIME(6) NULL, ADD KEY stackRun_owner (owner);
