-- Seed 003: "all relevant columns from the temporary IPP tables are copied into the PSPS
-- tables, discarding duplicates where necessary". How many repeated rows a batch's builder
-- discarded (the first of each primary key kept) is recorded on the batch (issue 19, point 2).

-- role: ipptopsps
ALTER TABLE psps_batch ADD COLUMN duplicates INT NOT NULL DEFAULT 0;
