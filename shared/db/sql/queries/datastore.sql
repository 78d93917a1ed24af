-- The DataStore (REFERENCE 6): products, filesets, files.

-- name: ds_product_get
SELECT prod_id, prod_name, last_update, last_fs, type, description, reg_time,
       prod_col_0, prod_col_1, prod_col_2, prod_col_3, prod_col_4, prod_col_5, prod_col_6,
       prod_col_7
FROM dsProduct WHERE prod_name = %(name)s;

-- name: ds_product_add
-- last_update set as dsprodtool sets it: dsrootindex prints it for a product with no fileset.
INSERT INTO dsProduct (prod_name, last_update, type, description, prod_col_0, prod_col_1,
                       prod_col_2, prod_col_3, prod_col_4, prod_col_5, prod_col_6, prod_col_7)
VALUES (%(name)s, UTC_TIMESTAMP(), %(type)s, %(description)s, %(col0)s, %(col1)s, %(col2)s,
        %(col3)s, %(col4)s, %(col5)s, %(col6)s, %(col7)s);

-- name: ds_products
SELECT prod_name, last_fs, last_update, reg_time, type, description
FROM dsProduct ORDER BY type, prod_name;

-- name: ds_product_touch
UPDATE dsProduct SET last_fs = %(name)s, last_update = UTC_TIMESTAMP() WHERE prod_id = %(prod_id)s;

-- name: ds_fileset_get
SELECT fileset_id, fileset_name, reg_time, hide, type FROM dsFileset
WHERE prod_id = %(prod_id)s AND fileset_name = %(name)s;

-- name: ds_filesets
SELECT fileset_id, fileset_name, reg_time, type, prod_col_0, prod_col_1, prod_col_2,
       prod_col_3, prod_col_4, prod_col_5, prod_col_6, prod_col_7
FROM dsFileset
WHERE prod_id = %(prod_id)s AND fileset_id > %(after_id)s AND hide = 0
ORDER BY fileset_id;

-- name: ds_fileset_add
INSERT INTO dsFileset (prod_id, fileset_name, reg_time, type, prod_col_0, prod_col_1,
                       prod_col_2, prod_col_3, prod_col_4, prod_col_5, prod_col_6, prod_col_7)
VALUES (%(prod_id)s, %(name)s, UTC_TIMESTAMP(), %(type)s, %(col0)s, %(col1)s, %(col2)s,
        %(col3)s, %(col4)s, %(col5)s, %(col6)s, %(col7)s);

-- name: ds_files
SELECT file_id, file_name, bytes, md5sum, type, uri, type_col_0, type_col_1, type_col_2,
       type_col_3
FROM dsFile WHERE fileset_id = %(fileset_id)s ORDER BY file_id;

-- name: ds_file_types
SELECT type, type_col_0, type_col_1, type_col_2, type_col_3 FROM dsFileType;

-- name: ds_file_add
INSERT INTO dsFile (fileset_id, file_name, bytes, md5sum, type, uri, type_col_0)
VALUES (%(fileset_id)s, %(name)s, %(bytes)s, %(md5sum)s, %(type)s, %(uri)s, %(component)s);

-- name: ds_fileset_hide
UPDATE dsFileset SET hide = 1 WHERE fileset_id = %(fileset_id)s;

-- name: ds_product_last_refresh
-- The product's most recent fileset is its newest one still listed (NULL: none), so that the
-- root listing never names a fileset that was hidden or removed.
UPDATE dsProduct SET last_fs = (
    SELECT f.fileset_name FROM dsFileset f
    WHERE f.prod_id = %(prod_id)s AND f.hide = 0 ORDER BY f.fileset_id DESC LIMIT 1)
WHERE prod_id = %(prod_id)s;

-- name: ds_files_delete
DELETE FROM dsFile WHERE fileset_id = %(fileset_id)s;

-- name: ds_fileset_delete
DELETE FROM dsFileset WHERE fileset_id = %(fileset_id)s;

-- name: ds_filesets_all
SELECT f.fileset_name, f.reg_time, f.hide, f.type,
       (SELECT COUNT(*) FROM dsFile d WHERE d.fileset_id = f.fileset_id) AS files,
       (SELECT COALESCE(SUM(d.bytes), 0) FROM dsFile d WHERE d.fileset_id = f.fileset_id) AS bytes
FROM dsFileset f WHERE f.prod_id = %(prod_id)s ORDER BY f.fileset_id;
