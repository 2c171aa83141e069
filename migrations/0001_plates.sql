-- One row per processed plate file, including the ones that failed: a failure is a QC fact too.
-- Append-only: later changes go into new migration files.
CREATE TABLE plates (
    id                   INTEGER PRIMARY KEY,
    run_id               TEXT NOT NULL,
    processed_at         TEXT NOT NULL,            -- UTC, RFC 3339
    source_path          TEXT NOT NULL,
    sha256               TEXT NOT NULL,
    size_bytes           INTEGER NOT NULL,
    sop_instance_uid     TEXT,
    sop_class_uid        TEXT,
    study_instance_uid   TEXT,
    series_instance_uid  TEXT,
    modality             TEXT,
    patient_id_hash      TEXT,                     -- keyed HMAC-SHA256, never the ID itself
    acquisition_datetime TEXT,
    station_name         TEXT,
    operator             TEXT,
    device_serial        TEXT,
    plate_identifier     TEXT,
    transfer_syntax      TEXT,
    rows                 INTEGER,
    columns              INTEGER,
    bits_stored          INTEGER,
    photometric          TEXT,
    verdict              TEXT NOT NULL CHECK (verdict IN ('usable', 'unusable', 'error')),
    unusable_score       REAL,
    threshold            REAL,
    reason_code          TEXT,                     -- primary CID 7011 code of an unusable plate
    model_name           TEXT,
    model_version        TEXT,
    model_sha256         TEXT,
    cam_method           TEXT,
    overlays             TEXT,                     -- JSON object: layer name -> PNG path
    montage_path         TEXT,
    decode_ms            REAL,
    infer_ms             REAL,
    explain_ms           REAL,
    total_ms             REAL,
    error_stage          TEXT,                     -- read | decode | infer | explain
    error_kind           TEXT,
    error                TEXT
);

CREATE INDEX plates_sop ON plates (sop_instance_uid);
CREATE INDEX plates_sha ON plates (sha256);
CREATE INDEX plates_processed ON plates (processed_at);
CREATE INDEX plates_station ON plates (station_name, processed_at);
CREATE INDEX plates_plate ON plates (plate_identifier, processed_at);

-- Every artifact type the model scored at or above its artifact threshold, one row each, so
-- reject analysis by type is a GROUP BY rather than JSON parsing.
CREATE TABLE plate_artifacts (
    plate_row     INTEGER NOT NULL REFERENCES plates (id) ON DELETE CASCADE,
    artifact_type TEXT NOT NULL,
    reason_code   TEXT NOT NULL,
    score         REAL NOT NULL,
    PRIMARY KEY (plate_row, artifact_type)
);

CREATE INDEX plate_artifacts_type ON plate_artifacts (artifact_type);

-- The stable, documented interface for people and tools; columns are only ever added.
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
    p.id AS plate_row
FROM plates p;
