-- Doubtful plates wait for a person (issue 17, item 3): a plate whose unusable score is near the
-- threshold, or that the model has not seen the like of (its exported feature distance at or
-- above the model's threshold), is recorded with its verdict and needs_review = 1 and the
-- reason; the daemon files it under review/ and sends nothing for it (no rejection note, not
-- forwarded) until a reviewer's override or confirmation decides. plate_verdicts gains the two
-- columns at its end; its existing columns are unchanged. The PostgreSQL twin is
-- migrations/postgres/0012_*.sql.

ALTER TABLE plates ADD COLUMN needs_review INTEGER NOT NULL DEFAULT 0;
ALTER TABLE plates ADD COLUMN review_reason TEXT;
ALTER TABLE plates ADD COLUMN feature_distance REAL;

-- Plates still waiting are few and looked up by the daemon every pass.
CREATE INDEX plates_needs_review ON plates (id) WHERE needs_review = 1;

DROP VIEW plate_verdicts;

CREATE VIEW plate_verdicts AS
SELECT
    p.sop_instance_uid,
    p.source_path,
    p.sha256,
    p.verdict,
    p.unusable_score,
    (SELECT group_concat(a.artifact_type, ',')
       FROM (SELECT artifact_type FROM plate_artifacts WHERE plate_row = p.id ORDER BY score DESC) a
    ) AS artifact_types,
    p.reason_code,
    p.model_version,
    p.processed_at,
    p.montage_path,
    p.error,
    p.station_name,
    p.plate_identifier,
    p.acquisition_datetime,
    p.id AS plate_row,
    p.needs_review,
    p.review_reason
FROM plates p;
