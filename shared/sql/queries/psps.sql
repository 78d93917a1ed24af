-- PSPS loading configurations.

-- name: psps_config_get
SELECT name, datastore_product, datastore_type, datastore_publish, dvo_label, dvo_location,
       ra_min, ra_max, dec_min, dec_max, box_size_deg, epoch, survey_id, batch_types, test_mode,
       deletion_policy, active, updated_at
FROM psps_config WHERE name = %(name)s;

-- name: psps_configs
SELECT name, datastore_product, datastore_type, datastore_publish, dvo_label, dvo_location,
       ra_min, ra_max, dec_min, dec_max, box_size_deg, epoch, survey_id, batch_types, test_mode,
       deletion_policy, active, updated_at
FROM psps_config ORDER BY name;

-- name: psps_config_save
INSERT INTO psps_config (name, datastore_product, datastore_type, datastore_publish, dvo_label,
                         dvo_location, ra_min, ra_max, dec_min, dec_max, box_size_deg, epoch,
                         survey_id, batch_types, test_mode, deletion_policy, active)
VALUES (%(name)s, %(datastore_product)s, %(datastore_type)s, %(datastore_publish)s,
        %(dvo_label)s, %(dvo_location)s, %(ra_min)s, %(ra_max)s, %(dec_min)s, %(dec_max)s,
        %(box_size_deg)s, %(epoch)s, %(survey_id)s, %(batch_types)s, %(test_mode)s,
        %(deletion_policy)s, %(active)s)
ON DUPLICATE KEY UPDATE
    datastore_product = VALUES(datastore_product), datastore_type = VALUES(datastore_type),
    datastore_publish = VALUES(datastore_publish), dvo_label = VALUES(dvo_label),
    dvo_location = VALUES(dvo_location), ra_min = VALUES(ra_min), ra_max = VALUES(ra_max),
    dec_min = VALUES(dec_min), dec_max = VALUES(dec_max), box_size_deg = VALUES(box_size_deg),
    epoch = VALUES(epoch), survey_id = VALUES(survey_id), batch_types = VALUES(batch_types),
    test_mode = VALUES(test_mode), deletion_policy = VALUES(deletion_policy),
    active = VALUES(active);
