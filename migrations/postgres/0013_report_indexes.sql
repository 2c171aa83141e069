-- Reports over a long shared history (issue 18): at a million judged images every report
-- computed each image's reporting day from text for every one of its parts, and the wear check
-- ranked every scan in the history. See migrations/0013_*.sql for the SQLite twin.
--
-- report_day: the reporting day exactly as qc_images computed it (the acquisition date, else
-- the processing date), now stored with the row (a generated column: written by PostgreSQL
-- itself, so no writer can disagree with it). Adding it rewrites the plates table once
-- (about 10 s per million plates). qc_images reads it; the view's columns are unchanged.
ALTER TABLE plates ADD COLUMN report_day TEXT GENERATED ALWAYS AS (
    CASE WHEN length(acquisition_datetime) >= 8
         THEN substr(acquisition_datetime, 1, 4) || '-' || substr(acquisition_datetime, 5, 2)
              || '-' || substr(acquisition_datetime, 7, 2)
         ELSE substr(processed_at, 1, 10) END) STORED;

-- `report --since/--until` reads only the days it covers.
CREATE INDEX plates_day ON plates (report_day) WHERE verdict <> 'error' AND superseded = 0;

-- Each physical plate's scans newest first in plate_scan_history's order: the wear check reads
-- a plate's last scans (and the list of plates) from here instead of ranking the history.
CREATE INDEX plates_recent
    ON plates (plate_identifier, report_day DESC, acquisition_datetime DESC, id DESC)
    WHERE plate_identifier IS NOT NULL AND verdict <> 'error' AND superseded = 0;

-- plates_unjudged: the few rows a report counts apart (files that could not be judged, plates
-- whose overlays could not be written), without reading the whole history for them.
CREATE INDEX plates_unjudged ON plates (id) WHERE verdict = 'error' OR overlay_error IS NOT NULL;

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
    p.report_day AS day,
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
