-- Bulk set-up for the benchmarks (not timed).

-- name: bench_label
INSERT INTO Label (label, priority) VALUES ('bench', 1);

-- name: bench_chip_run
INSERT INTO chipRun (exp_id, state, workdir, label, magicked, registered)
VALUES (%(exp_id)s, 'goto_cleaned', %(workdir)s, 'bench', 0, NOW());

-- name: bench_chip_component
INSERT INTO chipProcessedImfile (chip_id, exp_id, class_id, data_state, path_base, quality,
                                 fault, magicked)
VALUES (%(chip_id)s, %(exp_id)s, %(class_id)s, 'full', %(path_base)s, 0, 0, 0);

-- name: bench_object
INSERT INTO storage_object (ext_id, bytes, md5sum) VALUES (%(ext_id)s, %(bytes)s, %(md5sum)s);

-- name: bench_instances
INSERT INTO storage_instance (obj_id, vol_id, relpath)
SELECT obj_id, %(vol_id)s, ext_id FROM storage_object WHERE ext_id LIKE %(prefix)s;

-- name: bench_states
SELECT state, COUNT(*) AS n FROM chipRun GROUP BY state;
