-- Each site counts what it judged (issue 18). qc_images was the latest judgement of a SOP
-- Instance UID across all sites, so a plate judged at two sites counted only at the site that
-- judged it last, and one site's figures changed with another site's traffic. Now it is the
-- latest judgement of each UID *per site*: a re-scan at the same site still replaces the
-- earlier judgement, and an image judged at two sites counts once at each (a report over all
-- sites together counts it once per site that judged it). Overrides stay per image: a
-- person's word on an image applies wherever it was judged. Same columns as before, so every
-- view built on qc_images is unchanged. Written as joins (the latest override per UID, and
-- "no later judgement" as NOT EXISTS) rather than a subquery per row, so that PostgreSQL can
-- plan them as hash joins: 6x faster at 100,000 plates (docs/reports.md, "Load test").
-- The SQLite twin is migrations/0007_*.sql.

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
    p.sha256
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

-- The per-site latest judgement is looked up by UID and site.
CREATE INDEX plates_sop_site ON plates (sop_instance_uid, site, id);
