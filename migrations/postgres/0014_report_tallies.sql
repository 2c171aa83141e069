-- A running count of the judged images per site and report grouping, so that `report` over a
-- whole chain's history (no filter, or one site) adds up a few thousand rows instead of
-- hashing every image into seven groupings (issue 18, docs/reports.md "Load test": 1.1 s of
-- counting at a million images on two cores). PostgreSQL only: SQLite serves one site, and
-- its report keeps counting the images.
--
-- What is counted is what qc_images shows (judged, not superseded) as the *model* judged it:
-- images and model rejects per (site, grouping, value). Reviewers' overrides are not in these
-- rows; the report corrects for the few overridden images from the overrides themselves, so
-- an override needs no trigger and cannot race a recording here.
--
-- dim: 0 day, 1 site, 2 station, 3 operator, 4 device, 5 plate, 6 reason code (the model's, of
-- a rejected image), in the order of DIMENSIONS in src/report/mod.rs; value: the grouping's
-- value as the report shows it ('(none)' for NULL). site: the row's site ('' for none), so
-- that `report --site` reads its own rows.
CREATE TABLE report_tallies (
    site TEXT NOT NULL,
    dim SMALLINT NOT NULL,
    value TEXT NOT NULL,
    images BIGINT NOT NULL,
    model_rejected BIGINT NOT NULL,
    PRIMARY KEY (site, dim, value)
);

-- The seven tallies one plates row counts in: (dim, value) as the report groups it.
CREATE FUNCTION report_tallies_values(p plates) RETURNS TABLE (dim SMALLINT, value TEXT)
LANGUAGE sql IMMUTABLE AS $f$
    VALUES (0::SMALLINT, p.report_day), (1::SMALLINT, p.site), (2::SMALLINT, p.station_name),
           (3::SMALLINT, p.operator), (4::SMALLINT, p.device_serial),
           (5::SMALLINT, p.plate_identifier),
           (6::SMALLINT, CASE WHEN p.verdict = 'unusable' THEN p.reason_code END)
$f$;

-- One trigger per statement and kind, adding up its statement's counted rows (judged, not
-- superseded) in one grouped upsert, so a bulk import updates each tally once: a trigger per
-- row would update the same few rows a million times in one transaction, each update a new
-- row version the next must step over. An update takes its old rows out and puts its new rows
-- back. The upserts go in key order, under each site's transaction-scoped lock taken first in
-- site order: two transactions of one site (its daemon and a `scan`) then update the same
-- tally rows one after the other instead of deadlocking on them. A recording transaction
-- takes its image locks (src/record/plates.rs) in one statement before it inserts, so these
-- locks come after them and close no cycle. The SQL is static, planned once per connection:
-- building it per call (EXECUTE) cost the journal 30-45 % of its rate (docs/reports.md,
-- "Load test"). A transition table an operation lacks (old_rows of an insert, new_rows of a
-- delete) is named only in branches that operation never runs, and PL/pgSQL plans a
-- statement when it first runs it.
CREATE FUNCTION report_tallies_changed() RETURNS TRIGGER
LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_advisory_xact_lock(1347571028, hashtext(s))
           FROM (SELECT DISTINCT coalesce(site, '') AS s FROM new_rows
                  WHERE verdict <> 'error' AND superseded = 0 ORDER BY 1) x;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_advisory_xact_lock(1347571028, hashtext(s))
           FROM (SELECT DISTINCT coalesce(site, '') AS s FROM old_rows
                  WHERE verdict <> 'error' AND superseded = 0 ORDER BY 1) x;
    ELSE
        PERFORM pg_advisory_xact_lock(1347571028, hashtext(s))
           FROM (SELECT DISTINCT coalesce(site, '') AS s
                   FROM (SELECT site, verdict, superseded FROM old_rows
                         UNION ALL SELECT site, verdict, superseded FROM new_rows) r
                  WHERE verdict <> 'error' AND superseded = 0 ORDER BY 1) x;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO report_tallies AS t (site, dim, value, images, model_rejected)
        SELECT coalesce(p.site, ''), g.dim, coalesce(g.value, '(none)'), -count(*),
               -count(CASE WHEN p.verdict = 'unusable' THEN 1 END)
          FROM old_rows p, LATERAL report_tallies_values(p) AS g
         WHERE p.verdict <> 'error' AND p.superseded = 0
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (site, dim, value) DO UPDATE
           SET images = t.images + excluded.images,
               model_rejected = t.model_rejected + excluded.model_rejected;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO report_tallies AS t (site, dim, value, images, model_rejected)
        SELECT coalesce(p.site, ''), g.dim, coalesce(g.value, '(none)'), count(*),
               count(CASE WHEN p.verdict = 'unusable' THEN 1 END)
          FROM new_rows p, LATERAL report_tallies_values(p) AS g
         WHERE p.verdict <> 'error' AND p.superseded = 0
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (site, dim, value) DO UPDATE
           SET images = t.images + excluded.images,
               model_rejected = t.model_rejected + excluded.model_rejected;
    END IF;
    RETURN NULL;
END $f$;

CREATE TRIGGER plates_tally_insert AFTER INSERT ON plates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_tallies_changed();
CREATE TRIGGER plates_tally_update AFTER UPDATE ON plates
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_tallies_changed();
CREATE TRIGGER plates_tally_delete AFTER DELETE ON plates
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION report_tallies_changed();

-- The images the model rejected, for the findings of the same reports (rejects per artifact
-- type), which then read the rejects instead of the whole history.
CREATE INDEX plates_rejected ON plates (id) INCLUDE (sop_instance_uid, site)
    WHERE verdict = 'unusable' AND superseded = 0;

-- Counts report_tallies afresh from plates, writers held off meanwhile (SHARE lock): the
-- history so far when this migration runs, and the remedy should the tallies ever disagree
-- with the images (`report` says so; `psql -c 'SELECT report_tallies_recount()'`).
CREATE FUNCTION report_tallies_recount() RETURNS VOID
LANGUAGE plpgsql AS $f$
BEGIN
    LOCK TABLE plates IN SHARE MODE;
    DELETE FROM report_tallies;
    INSERT INTO report_tallies (site, dim, value, images, model_rejected)
    SELECT coalesce(p.site, ''), g.dim, coalesce(g.value, '(none)'), count(*),
           count(CASE WHEN p.verdict = 'unusable' THEN 1 END)
      FROM plates p, LATERAL report_tallies_values(p) AS g
     WHERE p.verdict <> 'error' AND p.superseded = 0
     GROUP BY 1, 2, 3;
END $f$;

SELECT report_tallies_recount();
