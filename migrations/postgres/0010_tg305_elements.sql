-- The AAPM Report 305 data elements a plate carries (issue 16): Body Part Examined (0018,0015),
-- View Position (0018,5101), the first Anatomic Region Sequence item's code meaning (0008,2218;
-- dental plates name the region of the teeth there) and the IEC 62494-1 Exposure Index
-- (0018,1411) and Deviation Index (0018,1413). NULL where the plate does not carry them (and for
-- plates recorded before this migration). qc_images gains them as its last columns; every
-- earlier column is unchanged. The SQLite twin is migrations/0010_*.sql.

ALTER TABLE plates ADD COLUMN body_part TEXT;
ALTER TABLE plates ADD COLUMN view_position TEXT;
ALTER TABLE plates ADD COLUMN anatomic_region TEXT;
ALTER TABLE plates ADD COLUMN exposure_index DOUBLE PRECISION;
ALTER TABLE plates ADD COLUMN deviation_index DOUBLE PRECISION;

CREATE OR REPLACE VIEW qc_images AS
SELECT
    p.id AS plate_row,
    p.sop_instance_uid,
    p.site,
    p.station_name,
    p.operator,
    p.device_serial,
    p.plate_identifier,
    p.processed_at,
    p.acquisition_datetime,
    CASE WHEN length(p.acquisition_datetime) >= 8
         THEN substr(p.acquisition_datetime, 1, 4) || '-' || substr(p.acquisition_datetime, 5, 2)
              || '-' || substr(p.acquisition_datetime, 7, 2)
         ELSE substr(p.processed_at, 1, 10) END AS day,
    p.verdict AS model_verdict,
    coalesce(o.verdict, p.verdict) AS verdict,
    CASE WHEN o.id IS NULL THEN 0 ELSE 1 END AS overridden,
    o.reviewer AS override_by,
    o.reason AS override_reason,
    o.created_at AS override_at,
    CASE WHEN coalesce(o.verdict, p.verdict) = 'unusable' THEN p.reason_code END AS reason_code,
    p.unusable_score,
    p.model_version,
    p.montage_path,
    p.source_path,
    p.sha256,
    p.body_part,
    p.view_position,
    p.anatomic_region,
    p.exposure_index,
    p.deviation_index
FROM plates p
LEFT JOIN (SELECT sop_instance_uid, max(id) AS id FROM overrides GROUP BY sop_instance_uid) lo
    ON lo.sop_instance_uid = p.sop_instance_uid
LEFT JOIN overrides o ON o.id = lo.id
WHERE p.verdict <> 'error'
  -- No later judgement of the same UID at the same site. Without a UID (NULL or '') an image
  -- stands alone: nullif makes the comparison fail for it.
  AND NOT EXISTS (SELECT 1 FROM plates q
                  WHERE q.sop_instance_uid = nullif(p.sop_instance_uid, '')
                    AND coalesce(q.site, '') = coalesce(p.site, '')
                    AND q.verdict <> 'error' AND q.id > p.id);
