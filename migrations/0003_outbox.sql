-- The network side (DICOM forwarding and rejection notes).
-- A finished, routed job is "dispatched" once its rejection note is written and its outbox
-- rows exist, in one transaction; a restart dispatches whatever was routed but not yet
-- dispatched. Jobs from before this migration are marked dispatched, so upgrading does not
-- send an old backlog.
ALTER TABLE jobs ADD COLUMN dispatched INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET dispatched = 1;

-- Key Object Selection "Rejected for Quality Reasons" notes and montage secondary captures
-- written for unusable plates.
CREATE TABLE rejection_notes (
    id               INTEGER PRIMARY KEY,
    plate_row        INTEGER NOT NULL REFERENCES plates (id),
    kind             TEXT NOT NULL CHECK (kind IN ('kos', 'sc')),
    sop_instance_uid TEXT NOT NULL UNIQUE,
    path             TEXT NOT NULL,
    reason_code      TEXT,
    created_at       TEXT NOT NULL
);

CREATE INDEX rejection_notes_plate ON rejection_notes (plate_row);

-- The durable outbox: one row per instance and destination. A row is 'sent' only after the
-- destination answered the C-STORE with success, and is never sent again after that.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    node             TEXT NOT NULL DEFAULT '',  -- the daemon whose local file `path` is
    destination      TEXT NOT NULL,
    plate_row        INTEGER REFERENCES plates (id),
    kind             TEXT NOT NULL CHECK (kind IN ('plate', 'kos', 'sc')),
    path             TEXT NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_status      TEXT,                    -- DIMSE status of the last answer, e.g. 0xA700
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    sent_at          TEXT
);

CREATE UNIQUE INDEX outbox_once ON outbox (node, destination, sop_instance_uid, kind);
CREATE INDEX outbox_due ON outbox (node, state, next_attempt_at);
