-- Indexes for reports over a long history (issue 18); the PostgreSQL twin is
-- migrations/postgres/0013_*.sql, which also indexes each plate's recent scans for its wear
-- query (SQLite keeps ranking plate_scan_history).
--
-- plates_day: the reporting day exactly as qc_images computes it (acquisition date, else the
-- processing date), over the rows qc_images shows, so `report --since/--until` reads only the
-- days it covers.
CREATE INDEX plates_day ON plates ((CASE WHEN length(acquisition_datetime) >= 8
         THEN substr(acquisition_datetime, 1, 4) || '-' || substr(acquisition_datetime, 5, 2)
              || '-' || substr(acquisition_datetime, 7, 2)
         ELSE substr(processed_at, 1, 10) END))
    WHERE verdict <> 'error' AND superseded = 0;

-- plates_unjudged: the few rows a report counts apart (files that could not be judged, plates
-- whose overlays could not be written), without reading the whole history for them.
CREATE INDEX plates_unjudged ON plates (id) WHERE verdict = 'error' OR overlay_error IS NOT NULL;
