-- The watch daemon's durable queue: one row per file taken from an inbox. A job is committed
-- as 'processing' before its plate is judged, and its outcome (with the plate row) is committed
-- before the file is moved, so a restart after any crash resumes exactly where it stopped.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    source_path   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('processing', 'done', 'quarantined', 'duplicate')),
    attempts      INTEGER NOT NULL DEFAULT 1,
    plate_row     INTEGER REFERENCES plates (id),
    duplicate_of  INTEGER REFERENCES plates (id),
    uid_conflict  INTEGER NOT NULL DEFAULT 0,   -- a known SOP Instance UID with other content
    routing_to    TEXT,                         -- destination chosen, written before the move
    routed_path   TEXT,                         -- NULL until the file has left the inbox
    first_seen    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- At most one unfinished job per file content at a path.
CREATE UNIQUE INDEX jobs_open ON jobs (source_path, sha256) WHERE routed_path IS NULL;
CREATE INDEX jobs_sha ON jobs (sha256);
CREATE INDEX jobs_state ON jobs (state);
