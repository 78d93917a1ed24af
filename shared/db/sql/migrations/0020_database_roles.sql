-- Database roles (issue 29, point 5). Seed 003: "ippToPsps uses two MySQL databases, a scratch
-- database ... and the ippToPsps database, which keeps track of which batches have been
-- processed, published to PSPS etc." With ipptopsps_dsn the loading side's tables live in a
-- database of their own; each database records which tables it holds (shared/db/schema.py),
-- one row per role. A database made before this holds both (the rows are added as this
-- migration is recorded).
-- role: both
CREATE TABLE IF NOT EXISTS dbrole (
  role VARCHAR(16) CHARACTER SET ascii NOT NULL PRIMARY KEY
) ENGINE=InnoDB;
