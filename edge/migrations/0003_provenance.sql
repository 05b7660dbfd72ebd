-- Where each held frame came from, so that the decisions taken for it after a restart say so too: the part it
-- shows (taken on a part trigger), its file or stream URL (password removed), and where its capture time came
-- from (wire CaptureClock: 0 the edge's clock on arrival, 1 the camera stream's sender reports). Records held
-- before this migration have neither part nor origin and were timed on arrival.
ALTER TABLE outbox ADD COLUMN part_id TEXT;
ALTER TABLE outbox ADD COLUMN origin TEXT;
ALTER TABLE outbox ADD COLUMN capture_clock INTEGER NOT NULL DEFAULT 0;
