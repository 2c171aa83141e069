-- The transfer syntax each outbox entry was stored in: the file's own, or the native syntax a
-- compressed plate was converted to for a destination that refused its compression.
ALTER TABLE outbox ADD COLUMN sent_transfer_syntax TEXT;
