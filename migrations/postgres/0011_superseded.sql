-- "The latest judgement of an image at a site" was a NOT EXISTS search for a later row of the
-- same UID and site, made by every query of every report: at 1,000,000 plates most of the time
-- of `SELECT count(*) FROM qc_images` (issue 18, docs/reports.md "Load test"). Now the recorder
-- marks the earlier judgements `superseded` in the transaction that records the later one,
-- and qc_images reads the mark. Same rule as before: an error never supersedes nor is
-- counted, and an image without a UID stands alone. Existing rows are marked here. Same
-- columns as migration 0010. The SQLite twin is migrations/0011_*.sql.

ALTER TABLE plates ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;

UPDATE plates SET superseded = 1
 WHERE verdict <> 'error'
   AND EXISTS (SELECT 1 FROM plates q
                WHERE q.sop_instance_uid = nullif(plates.sop_instance_uid, '')
                  AND coalesce(q.site, '') = coalesce(plates.site, '')
                  AND q.verdict <> 'error' AND q.id > plates.id);

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
WHERE p.verdict <> 'error' AND p.superseded = 0;
