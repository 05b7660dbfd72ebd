-- Where each frame came from, as its edge reported it: the part it shows ('' when it was not taken on a part
-- trigger), its file or stream URL without password ('' when not reported), and where its capture time came
-- from ('arrival': the edge's clock when the frame arrived; 'stream': the camera stream's sender reports).
-- Frames stored before this migration, and frames from edges that predate these fields, read as no part, no
-- origin and the arrival clock, the only one such edges had.
ALTER TABLE frames ADD COLUMN part_id TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN origin TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN capture_clock TEXT NOT NULL DEFAULT 'arrival';
-- Review lists filter by part.
CREATE INDEX frames_part ON frames (part_id, capture_time_us);
