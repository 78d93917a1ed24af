-- Isolation from a broken or hostile peer (issue: a mirror that trusted its upstream).
--
-- path_base indexes: a path_base belongs to one run only. The mirror's importer refuses a
-- run whose path_base another run here already has, and cleanup refuses to delete files
-- whose path_base another run shares; both look the path_base up in every stage's table.
--
-- rcDSFileset attempts / retry_at: a fileset that failed is retried with backoff while the
-- source's other filesets go on; retry_at is when it is next tried (NULL: not waiting).

ALTER TABLE chipProcessedImfile ADD KEY chipProcessedImfile_path_base (path_base);
ALTER TABLE camProcessedExp ADD KEY camProcessedExp_path_base (path_base);
ALTER TABLE warpSkyfile ADD KEY warpSkyfile_path_base (path_base);
ALTER TABLE diffSkyfile ADD KEY diffSkyfile_path_base (path_base);
ALTER TABLE stackSumSkyfile ADD KEY stackSumSkyfile_path_base (path_base);

ALTER TABLE rcDSFileset
    ADD COLUMN attempts INT NOT NULL DEFAULT 0,
    ADD COLUMN retry_at DATETIME(6) NULL,
    ADD KEY rcDSFileset_retry (source, state, retry_at);
