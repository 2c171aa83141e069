-- Site calibrations (`plateqc calibrate`): the decision threshold a site chose from its own
-- reviewed plates for a target false-reject rate, what it rests on and who chose it. The
-- latest one for (site, model_version) replaces the model's own threshold when the daemon or
-- scan starts (or on SIGHUP); every plate row keeps the threshold that judged it.
CREATE TABLE calibrations (
    id                  INTEGER PRIMARY KEY,
    site                TEXT NOT NULL,
    model_version       TEXT NOT NULL,
    threshold           REAL NOT NULL,
    model_threshold     REAL,
    target_false_reject REAL NOT NULL,
    reviewed_usable     INTEGER NOT NULL,
    reviewed_unusable   INTEGER NOT NULL,
    false_reject        REAL NOT NULL,
    recall              REAL NOT NULL,
    recall_ci_low       REAL NOT NULL,
    recall_ci_high      REAL NOT NULL,
    plate_rows          TEXT NOT NULL,   -- the reviewed plates it rests on: plate ids, comma-separated
    calibrated_by       TEXT NOT NULL CHECK (length(trim(calibrated_by)) > 0),
    created_at          TEXT NOT NULL
);

CREATE INDEX calibrations_site_model ON calibrations (site, model_version, id);
