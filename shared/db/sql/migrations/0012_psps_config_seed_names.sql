-- Loading configs in the operators' own form (seed 003, issue 19 point 6): the sky limits are
-- min_ra / max_ra / min_dec / max_dec, and the columns show the types queue.py's prompts
-- print (tinyint(1), varchar(30), varchar(100), varchar(1000)). The old names stay accepted
-- as aliases by `ippctl psps config set`.

-- role: ipptopsps
ALTER TABLE psps_config
    RENAME COLUMN ra_min TO min_ra,
    RENAME COLUMN ra_max TO max_ra,
    RENAME COLUMN dec_min TO min_dec,
    RENAME COLUMN dec_max TO max_dec;

ALTER TABLE psps_config
    MODIFY COLUMN datastore_publish TINYINT(1) NOT NULL,
    MODIFY COLUMN test_mode TINYINT(1) NOT NULL,
    MODIFY COLUMN active TINYINT(1) NOT NULL,
    MODIFY COLUMN dvo_label VARCHAR(100) NOT NULL,
    MODIFY COLUMN dvo_location VARCHAR(1000) NOT NULL;
