-- Reject analysis (AAPM TG-151 / TG-305 style), reviewer overrides and plate-wear tracking.
-- The same objects with the same columns exist on PostgreSQL (migrations/postgres/0004_*.sql);
-- only the dialect differs, so every query over these views runs unchanged on both.

-- Which site (daemon / machine) recorded a plate: several sites can share one database.
ALTER TABLE plates ADD COLUMN site TEXT;
CREATE INDEX plates_site ON plates (site, processed_at);

-- The watch journal is keyed by a local path; `node` says whose path it is.
ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT '';
DROP INDEX jobs_open;
CREATE UNIQUE INDEX jobs_open ON jobs (node, source_path, sha256) WHERE routed_path IS NULL;

-- A person's word on a verdict: who, when, why. Append-only: the latest row for a SOP
-- Instance UID is the effective verdict; earlier rows stay as history.
CREATE TABLE overrides (
    id               INTEGER PRIMARY KEY,
    sop_instance_uid TEXT NOT NULL,
    verdict          TEXT NOT NULL CHECK (verdict IN ('usable', 'unusable')),
    reviewer         TEXT NOT NULL CHECK (length(trim(reviewer)) > 0),
    reason           TEXT NOT NULL CHECK (length(trim(reason)) > 0),
    created_at       TEXT NOT NULL,                 -- UTC, RFC 3339
    plate_row        INTEGER REFERENCES plates (id), -- the judgement that was looked at
    model_verdict    TEXT,                          -- what that judgement said
    site             TEXT
);

CREATE INDEX overrides_sop ON overrides (sop_instance_uid, id);

CREATE TRIGGER overrides_no_update BEFORE UPDATE ON overrides
BEGIN
    SELECT RAISE(ABORT, 'overrides are append-only');
END;

CREATE TRIGGER overrides_no_delete BEFORE DELETE ON overrides
BEGIN
    SELECT RAISE(ABORT, 'overrides are append-only');
END;

-- One row per judged image: the latest judgement of each SOP Instance UID (a re-scan replaces
-- an earlier one, it does not count twice), with the reviewer's override applied.
-- `day` is the acquisition date (from the DICOM header), or the processing date without one.
CREATE VIEW qc_images AS
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
LEFT JOIN overrides o
    ON o.id = (SELECT max(x.id) FROM overrides x WHERE x.sop_instance_uid = p.sop_instance_uid)
WHERE p.verdict <> 'error'
  AND (coalesce(p.sop_instance_uid, '') = ''   -- without a UID an image stands alone
       OR p.id = (SELECT max(q.id) FROM plates q
                  WHERE q.sop_instance_uid = p.sop_instance_uid AND q.verdict <> 'error'));

-- qc_images with its ISO 8601 week (`2026-W43`), computed from the Thursday of the week so it
-- needs no strftime('%V') (SQLite before 3.46 lacks it).
CREATE VIEW qc_images_weekly AS
SELECT i.*,
       strftime('%Y', t.thursday) || '-W'
       || printf('%02d', (CAST(strftime('%j', t.thursday) AS INTEGER) - 1) / 7 + 1) AS iso_week
FROM qc_images i
JOIN (SELECT plate_row, date(day, '-3 days', 'weekday 4') AS thursday FROM qc_images) t
    ON t.plate_row = i.plate_row;

-- Every reported artifact of a judged image; `counts` is 0 when a reviewer overrode the image
-- to usable (a person's word beats the model's finding).
CREATE VIEW qc_findings AS
SELECT i.plate_row, i.sop_instance_uid, i.site, i.station_name, i.operator, i.device_serial,
       i.plate_identifier, i.day, i.verdict, a.artifact_type, a.reason_code, a.score,
       CASE WHEN i.overridden = 1 AND i.verdict = 'usable' THEN 0 ELSE 1 END AS counts
FROM qc_images i JOIN plate_artifacts a ON a.plate_row = i.plate_row;

-- Reject rate by group. `images` judged images, `rejected` effective unusable verdicts,
-- `model_rejected` what the model alone said, `overridden` images a reviewer looked at,
-- `overturned` those whose verdict the reviewer changed.
CREATE VIEW reject_rate_by_day AS
SELECT day,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images GROUP BY day;

CREATE VIEW reject_rate_by_week AS
SELECT iso_week,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images_weekly GROUP BY iso_week;

CREATE VIEW reject_rate_by_station AS
SELECT site, station_name,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images GROUP BY site, station_name;

CREATE VIEW reject_rate_by_operator AS
SELECT operator,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images GROUP BY operator;

CREATE VIEW reject_rate_by_device AS
SELECT device_serial,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images GROUP BY device_serial;

CREATE VIEW reject_rate_by_plate AS
SELECT plate_identifier,
       count(*) AS images,
       count(CASE WHEN verdict = 'unusable' THEN 1 END) AS rejected,
       count(CASE WHEN model_verdict = 'unusable' THEN 1 END) AS model_rejected,
       count(CASE WHEN overridden = 1 THEN 1 END) AS overridden,
       count(CASE WHEN verdict <> model_verdict THEN 1 END) AS overturned,
       CAST(round(100.0 * count(CASE WHEN verdict = 'unusable' THEN 1 END) / count(*), 1)
            AS DOUBLE PRECISION) AS reject_pct
FROM qc_images GROUP BY plate_identifier;

-- Why images are rejected: each artifact type reported on an effectively rejected image (an
-- image with two types counts for both), and the primary CID 7011 reason code per image.
CREATE VIEW reject_reasons AS
SELECT artifact_type, reason_code, count(*) AS rejected
FROM qc_findings WHERE verdict = 'unusable' AND counts = 1
GROUP BY artifact_type, reason_code;

CREATE VIEW reject_rate_by_reason_code AS
SELECT coalesce(reason_code, 'none') AS reason_code, count(*) AS rejected
FROM qc_images WHERE verdict = 'unusable'
GROUP BY coalesce(reason_code, 'none');

-- Trend: each ISO week's reject rate next to the week before it.
CREATE VIEW reject_trend_weekly AS
SELECT iso_week, images, rejected, reject_pct,
       LAG(reject_pct) OVER (ORDER BY iso_week) AS previous_pct,
       CAST(round(CAST(reject_pct - LAG(reject_pct) OVER (ORDER BY iso_week) AS NUMERIC), 1)
            AS DOUBLE PRECISION) AS change_pct
FROM reject_rate_by_week;

-- Plate wear. Artifact types that mean damage to the physical plate (editable: insert or
-- delete rows to change what counts).
CREATE TABLE wear_artifact_types (artifact_type TEXT PRIMARY KEY);
INSERT INTO wear_artifact_types (artifact_type) VALUES ('scratch'), ('bend'), ('bite_mark'), ('peel');

-- Every judged image of a physical plate, newest first: scan_rank 1 is its latest scan.
CREATE VIEW plate_scan_history AS
SELECT plate_identifier, plate_row, sop_instance_uid, site, station_name, day,
       acquisition_datetime, verdict,
       ROW_NUMBER() OVER (PARTITION BY plate_identifier
                          ORDER BY day DESC, acquisition_datetime DESC, plate_row DESC) AS scan_rank
FROM qc_images WHERE plate_identifier IS NOT NULL;

-- The default replacement rule: a wear artifact on at least 9 of the plate's last 20 scans.
-- `plateqc report --wear-hits N --wear-window M` applies another rule to the same views.
CREATE VIEW plate_wear AS
SELECT h.plate_identifier, f.artifact_type,
       (SELECT count(*) FROM plate_scan_history s
         WHERE s.plate_identifier = h.plate_identifier AND s.scan_rank <= 20) AS recent_scans,
       count(*) AS hits,
       max(h.day) AS last_hit_day,
       CASE WHEN count(*) >= 9 THEN 1 ELSE 0 END AS replace_plate
FROM plate_scan_history h
JOIN qc_findings f ON f.plate_row = h.plate_row
WHERE h.scan_rank <= 20 AND f.counts = 1
  AND f.artifact_type IN (SELECT artifact_type FROM wear_artifact_types)
GROUP BY h.plate_identifier, f.artifact_type;
