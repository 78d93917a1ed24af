-- ippctl demo: the counts its driver waits on and checks.

-- name: demo_runs_chip
SELECT chip_id AS id, state FROM chipRun ORDER BY chip_id;

-- name: demo_run_state_chip
SELECT state FROM chipRun WHERE chip_id = %(id)s;

-- name: demo_runs_camera
SELECT cam_id AS id, state FROM camRun ORDER BY cam_id;

-- name: demo_run_state_camera
SELECT state FROM camRun WHERE cam_id = %(id)s;

-- name: demo_runs_warp
SELECT warp_id AS id, state FROM warpRun ORDER BY warp_id;

-- name: demo_run_state_warp
SELECT state FROM warpRun WHERE warp_id = %(id)s;

-- name: demo_runs_diff
SELECT diff_id AS id, state FROM diffRun ORDER BY diff_id;

-- name: demo_run_state_diff
SELECT state FROM diffRun WHERE diff_id = %(id)s;

-- name: demo_runs_stack
SELECT stack_id AS id, state FROM stackRun ORDER BY stack_id;

-- name: demo_run_state_stack
SELECT state FROM stackRun WHERE stack_id = %(id)s;

-- name: demo_items
SELECT state, COUNT(*) AS n FROM psps_item WHERE config = 'demo' GROUP BY state;

-- name: demo_items_open
-- Items still to be built, or built and not yet followed to the end.
SELECT COUNT(*) FROM psps_item WHERE config = 'demo' AND state NOT IN ('done', 'failed');

-- name: demo_unfinished_batches
-- Published batches PSPS has not finished with, or whose copies the cleaner still has to delete.
SELECT COUNT(*) FROM psps_batch
WHERE config = 'demo' AND loaded_to_datastore = 'succeeded' AND (odm_done = 0 OR cleaned = 0);

-- name: demo_merged_detections
SELECT type, SUM(detections) AS n FROM psps_batch
WHERE config = 'demo' AND merged = 'succeeded' GROUP BY type;

-- name: demo_destreaked_chips
-- The full chip runs the standing target ships: those destreaked (the others wait, seed 001).
SELECT COUNT(*) FROM chipRun WHERE state = 'full' AND magicked > 0;

-- name: demo_unmagicked_at_mirror
-- Chip runs at the mirror that were never destreaked: there must be none.
SELECT COUNT(*) FROM chipRun WHERE magicked = 0;

-- name: demo_shipped
SELECT COUNT(*) FROM distRun WHERE state = 'full';

-- name: demo_imported
SELECT COUNT(*) FROM rcDSFileset WHERE state = 'full';

-- name: demo_count_Detection
SELECT COUNT(*) FROM Detection;

-- name: demo_count_StackDetection
SELECT COUNT(*) FROM StackDetection;

-- name: demo_count_ObjectThin
SELECT COUNT(*) FROM ObjectThin;
