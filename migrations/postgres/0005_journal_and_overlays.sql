-- PostgreSQL twin of migrations/0005_journal_and_overlays.sql.
-- The jobs journal after the audit of issue 13, and plates judged without their overlays.

-- A path that is not valid UTF-8 is stored twice: `source_path` is its readable (lossy) form,
-- `source_hex` the hex of its bytes, from which the daemon rebuilds the real path; '' for
-- every UTF-8 path. Two such names with one readable form stay two jobs.
ALTER TABLE jobs ADD COLUMN source_hex TEXT NOT NULL DEFAULT '';
DROP INDEX jobs_open;
CREATE UNIQUE INDEX jobs_open ON jobs (node, source_path, source_hex, sha256) WHERE routed_path IS NULL;

-- The run (`plates.run_id` of the daemon) that last took the job: an unfinished job of another
-- run was in flight when that run stopped.
ALTER TABLE jobs ADD COLUMN run_id TEXT;
-- How often the job was taken alone, with nothing else in flight, after such a stop; a stop
-- then can only be this file's doing, so this (not `attempts`) is what quarantines it.
ALTER TABLE jobs ADD COLUMN alone_runs BIGINT NOT NULL DEFAULT 0;

-- A judged plate whose overlays could not be written: the verdict stands, this says why the
-- overlays are missing (NULL when they were written or not asked for).
ALTER TABLE plates ADD COLUMN overlay_error TEXT;
