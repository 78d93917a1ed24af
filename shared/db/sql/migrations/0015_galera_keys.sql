-- role: both
-- Galera replicates a row by its primary key: a table without one cannot have its rows
-- deleted safely on a cluster (each node would pick its own row). dbversion holds one row.
ALTER TABLE dbversion ADD PRIMARY KEY (schema_version);
