-- Where each frame came from (see the SQLite migration 0004): part id, origin and capture clock.
ALTER TABLE frames ADD COLUMN part_id TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN capture_clock TEXT NOT NULL DEFAULT 'arrival';
CREATE INDEX frames_part ON frames (part_id, capture_time_us);
