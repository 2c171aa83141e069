-- Version 0014 is PostgreSQL's running report tallies (migrations/postgres/0014_*.sql: kept
-- by triggers so that a report over a chain's whole shared history adds them up instead of
-- counting a million images). SQLite serves one site, whose report counts its images as
-- before, so nothing changes here; the file keeps the two folders' version numbers alike.
SELECT 1;
