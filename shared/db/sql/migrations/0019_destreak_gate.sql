-- Destreak gates distribution (issue 29). Seed 001: "If this value is non-zero, the image has
-- been destreaked and thus can be sent through the distribution system". A distRun waits in
-- 'new' until its run is destreaked, tested as the IPP's disttool_pending_<stage>.sql test it:
-- chip, warp, diff: the run's magicked > 0; camera: camRun.magicked > 0 and (a clean run, or
-- the chip run's magicked != 0); raw (not clean): rawExp.magicked != 0, with a destreaked chip
-- run (magicked != 0) and its camera run (magicked > 0); fake, stack and a clean raw export
-- wait for nothing. A clean distribution (no pixels) of a run destreaked and then cleaned
-- (magicked -1, REFERENCE 1) is destreaked too: for it magicked != 0 is enough. distRun.no_magic (from its target's no_magic, or ippctl dist queue
-- --no-magic) ships a run unmagicked, for a target that explicitly takes such data.
ALTER TABLE distTarget ADD COLUMN no_magic TINYINT NOT NULL DEFAULT 0;

CREATE OR REPLACE SQL SECURITY INVOKER VIEW distWaitingDestreak AS
SELECT d.dist_id, d.stage, d.stage_id, d.product
FROM distRun d
WHERE d.state = 'new' AND NOT COALESCE(d.no_magic, 0) AND (
       (d.stage = 'chip' AND NOT EXISTS (
            SELECT 1 FROM chipRun r WHERE r.chip_id = d.stage_id
            AND (r.magicked > 0 OR (d.clean AND r.magicked <> 0))))
    OR (d.stage = 'camera' AND NOT EXISTS (
            SELECT 1 FROM camRun c JOIN chipRun ch ON ch.chip_id = c.chip_id
            WHERE c.cam_id = d.stage_id AND (c.magicked > 0 OR (d.clean AND c.magicked <> 0))
              AND (d.clean OR ch.magicked <> 0)))
    OR (d.stage = 'warp' AND NOT EXISTS (
            SELECT 1 FROM warpRun r WHERE r.warp_id = d.stage_id
            AND (r.magicked > 0 OR (d.clean AND r.magicked <> 0))))
    OR (d.stage = 'diff' AND NOT EXISTS (
            SELECT 1 FROM diffRun r WHERE r.diff_id = d.stage_id
            AND (r.magicked > 0 OR (d.clean AND r.magicked <> 0))))
    OR (d.stage = 'raw' AND NOT d.clean AND NOT EXISTS (
            SELECT 1 FROM rawExp e
            JOIN chipRun ch ON ch.exp_id = e.exp_id AND ch.magicked <> 0
            JOIN camRun c ON c.chip_id = ch.chip_id AND c.magicked > 0
            WHERE e.exp_id = d.stage_id AND e.magicked <> 0))
);
