-- Frame identity that survives loss of the outbox: the SHA-256 of each held image (sent with the frame and
-- echoed in its verdict). The outbox incarnation itself is the `meta` row 'incarnation', created at open.
ALTER TABLE outbox ADD COLUMN image_sha256 BLOB NOT NULL DEFAULT x'';

-- The eviction audit keeps the most recent rows only (trimmed by time on every eviction).
CREATE INDEX evicted_time ON evicted (evicted_us);
