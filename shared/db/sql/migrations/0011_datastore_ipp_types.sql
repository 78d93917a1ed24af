-- The DataStore speaks the IPP's names (issue 18, point 4), so that the IPP's own DataStore
-- client reads every line of its listings. Facts from the public IPP source:
-- - DataStore/lib/DataStore/Utils.pm: the client's known product, fileset and file types; a
--   line of any other type is dropped.
-- - DataStoreServer/scripts/tabledefs.sql: the type-specific file columns (type_col_0..) and
--   dsFileType, which labels them per file type (text, tgz, dbinfo: component; chip:
--   chipname).
-- - ippScripts/scripts/dist_make_fileset.pl: a distribution fileset is of type IPP-DIST, its
--   dbinfo and dirinfo are files of type text with component dbinfo / dirinfo, its bundles
--   of type tgz with their component.

ALTER TABLE dsProduct MODIFY COLUMN type VARCHAR(64) NOT NULL;
ALTER TABLE dsFileset MODIFY COLUMN type VARCHAR(64) NOT NULL DEFAULT 'notset';
ALTER TABLE dsFile
    MODIFY COLUMN type VARCHAR(64) NOT NULL,
    ADD COLUMN type_col_0 VARCHAR(64) NULL,
    ADD COLUMN type_col_1 VARCHAR(64) NULL,
    ADD COLUMN type_col_2 VARCHAR(64) NULL,
    ADD COLUMN type_col_3 VARCHAR(64) NULL;

CREATE TABLE dsFileType (
    type VARCHAR(64) NOT NULL PRIMARY KEY,
    type_col_0 VARCHAR(64) NULL,
    type_col_1 VARCHAR(64) NULL,
    type_col_2 VARCHAR(64) NULL,
    type_col_3 VARCHAR(64) NULL
) ENGINE=InnoDB;

INSERT INTO dsFileType (type, type_col_0) VALUES
    ('chip', 'chipname'), ('dbinfo', 'component'), ('text', 'component'), ('tgz', 'component');

-- What earlier versions of this project registered, renamed to the IPP's names.
UPDATE dsProduct SET type = 'ipp-dist' WHERE type = 'dist';
UPDATE dsProduct SET type = 'IPP-PSPS' WHERE type = 'psps';
UPDATE dsProduct SET type = 'ipp-misc' WHERE type = 'other';
UPDATE dsFileset s JOIN dsProduct p ON p.prod_id = s.prod_id
SET s.type = 'IPP-DIST' WHERE p.type = 'ipp-dist' AND s.type = 'notset';
UPDATE dsFileset SET type = 'IPP_PSPS' WHERE type = 'psps';
UPDATE dsFile SET type = 'text', type_col_0 = 'dbinfo' WHERE type = 'dbinfo';
UPDATE dsFile SET type = 'text', type_col_0 = 'manifest' WHERE type = 'manifest';
UPDATE dsFile SET type = 'text' WHERE type = 'mdc';
UPDATE dsFile f
    JOIN dsFileset s ON s.fileset_id = f.fileset_id
    JOIN dsProduct p ON p.prod_id = s.prod_id
    JOIN distRun d ON d.product = p.prod_name AND d.fileset_name = s.fileset_name
    JOIN distComponent c ON c.dist_id = d.dist_id AND c.name = f.file_name
SET f.type_col_0 = c.component
WHERE f.type = 'tgz' AND f.type_col_0 IS NULL;

-- role: ipptopsps
-- seed 003: "datastore_type (varchar(30)) ... default of: 'IPP_PSPS'"
ALTER TABLE psps_config MODIFY COLUMN datastore_type VARCHAR(30) NOT NULL;
UPDATE psps_config SET datastore_type = 'IPP_PSPS' WHERE datastore_type = 'psps';
