-- Doubtful plates wait for a person (issue 17, item 3); see migrations/0012_needs_review.sql.
-- plate_verdicts gains the two columns at its end (CREATE OR REPLACE VIEW may only append).

ALTER TABLE plates ADD COLUMN needs_review INTEGER NOT NULL DEFAULT 0;
ALTER TABLE plates ADD COLUMN review_reason TEXT;
ALTER TABLE plates ADD COLUMN feature_distance DOUBLE PRECISION;

CREATE INDEX plates_needs_review ON plates (id) WHERE needs_review = 1;

CREATE OR REPLACE VIEW plate_verdicts AS
SELECT
    p.sop_instance_uid,
    p.source_path,
    p.sha256,
    p.verdict,
    p.unusable_score,
    (SELECT string_agg(a.artifact_type, ',' ORDER BY a.score DESC)
       FROM plate_artifacts a WHERE a.plate_row = p.id
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
