-- Nebulous storage: volumes, objects (keys) and instances (files).

-- name: add_volume
INSERT INTO storage_volume (name, host, root, state, allocate)
VALUES (%(name)s, %(host)s, %(root)s, 'up', %(allocate)s);

-- name: list_volumes
SELECT v.vol_id, v.name, v.host, v.root, v.state, v.allocate,
       COUNT(i.ins_id) AS instances
FROM storage_volume v LEFT JOIN storage_instance i ON i.vol_id = v.vol_id
GROUP BY v.vol_id, v.name, v.host, v.root, v.state, v.allocate
ORDER BY v.name;

-- name: get_volume
SELECT vol_id, name, host, root, state, allocate FROM storage_volume WHERE name = %(name)s;

-- name: set_volume_state
UPDATE storage_volume SET state = %(state)s WHERE name = %(name)s;

-- name: insert_object
INSERT INTO storage_object (ext_id, bytes, md5sum) VALUES (%(ext_id)s, %(bytes)s, %(md5sum)s);

-- name: insert_instance
INSERT INTO storage_instance (obj_id, vol_id, relpath) VALUES (%(obj_id)s, %(vol_id)s, %(relpath)s);

-- name: get_object
SELECT obj_id, ext_id, bytes, md5sum, created_at FROM storage_object WHERE ext_id = %(ext_id)s;

-- name: get_object_for_update
SELECT obj_id, ext_id, bytes, md5sum FROM storage_object WHERE ext_id = %(ext_id)s FOR UPDATE;

-- name: object_instances
SELECT i.ins_id, i.relpath, v.vol_id, v.name AS volume, v.root, v.state
FROM storage_instance i JOIN storage_volume v ON v.vol_id = i.vol_id
WHERE i.obj_id = %(obj_id)s
ORDER BY v.state = 'up' DESC, v.name;

-- name: delete_instances
DELETE FROM storage_instance WHERE obj_id = %(obj_id)s;

-- name: delete_instance
DELETE FROM storage_instance WHERE ins_id = %(ins_id)s;

-- name: delete_object
DELETE FROM storage_object WHERE obj_id = %(obj_id)s;

-- name: list_objects
SELECT o.ext_id, o.bytes, o.md5sum, o.created_at, COUNT(i.ins_id) AS instances
FROM storage_object o LEFT JOIN storage_instance i ON i.obj_id = o.obj_id
WHERE o.ext_id LIKE %(prefix)s
GROUP BY o.obj_id, o.ext_id, o.bytes, o.md5sum, o.created_at
ORDER BY o.ext_id
LIMIT %(limit)s;

-- name: objects_by_ext_ids
SELECT o.obj_id, o.ext_id, o.bytes, o.md5sum,
       SUM(v.state = 'up') AS up, SUM(v.state = 'lost') AS lost, COUNT(i.ins_id) AS instances
FROM storage_object o
LEFT JOIN storage_instance i ON i.obj_id = o.obj_id
LEFT JOIN storage_volume v ON v.vol_id = i.vol_id
WHERE o.ext_id IN %(ext_ids)s
GROUP BY o.obj_id, o.ext_id, o.bytes, o.md5sum;

-- name: instances_by_ext_ids
SELECT o.obj_id, o.ext_id, o.bytes, i.ins_id, i.relpath, v.name AS volume, v.root, v.state
FROM storage_object o
LEFT JOIN storage_instance i ON i.obj_id = o.obj_id
LEFT JOIN storage_volume v ON v.vol_id = i.vol_id
WHERE o.ext_id IN %(ext_ids)s;

-- name: delete_instances_of
DELETE FROM storage_instance WHERE obj_id IN %(obj_ids)s;

-- name: delete_objects
DELETE FROM storage_object WHERE obj_id IN %(obj_ids)s;

-- name: volumes_brief
SELECT vol_id, name, host, root, state, allocate FROM storage_volume ORDER BY name;

-- name: instances_from_objects
INSERT INTO storage_instance (obj_id, vol_id, relpath)
SELECT obj_id, %(vol_id)s, ext_id FROM storage_object WHERE ext_id IN %(ext_ids)s;

-- name: audit_instances
-- Every instance of a volume (the audit compares them with the files under its root).
SELECT i.relpath, o.ext_id, o.bytes FROM storage_instance i
JOIN storage_object o ON o.obj_id = i.obj_id WHERE i.vol_id = %(vol_id)s;

-- name: audit_objects_without_instances
SELECT o.ext_id FROM storage_object o
WHERE NOT EXISTS (SELECT 1 FROM storage_instance i WHERE i.obj_id = o.obj_id);
