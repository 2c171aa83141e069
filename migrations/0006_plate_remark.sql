-- A judged plate plateqc had to handle other than usual, in words for the QA reader: a file
-- without its SOP Instance UID (recorded by its sha256, not forwarded), or one whose UID came
-- from the file meta information. NULL for the usual plate.
-- The same column exists on PostgreSQL (migrations/postgres/0006_*.sql).
ALTER TABLE plates ADD COLUMN remark TEXT;
