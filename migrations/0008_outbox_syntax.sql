-- The transfer syntax each outbox entry was stored in: the file's own, or the native syntax a
-- compressed plate was converted to for a destination that refused its compression.
ALTER TABLE outbox ADD COLUMN sent_transfer_syntax TEXT;

-- A held plate released by a reviewer's override is found by its plate row.
CREATE INDEX outbox_plate ON outbox (plate_row);
