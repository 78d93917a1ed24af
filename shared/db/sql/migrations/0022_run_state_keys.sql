-- An index of each run table by state alone (InnoDB appends the id: (state, id)), for the
-- statements that take one state in id order across labels: the update agent's claim (the
-- next run in update after the last one it took) and the dist server's candidates (full runs
-- of a dist group not shipped yet). With only (state, label, id) MariaDB walked the primary
-- key from the start of the table for them; at a million runs per stage that was a scan of
-- the whole table each time a pass found nothing more (bench/scale.py).
-- role: processing
ALTER TABLE chipRun ADD KEY chipRun_state (state);
ALTER TABLE camRun ADD KEY camRun_state (state);
ALTER TABLE warpRun ADD KEY warpRun_state (state);
ALTER TABLE diffRun ADD KEY diffRun_state (state);
ALTER TABLE stackRun ADD KEY stackRun_state (state);
