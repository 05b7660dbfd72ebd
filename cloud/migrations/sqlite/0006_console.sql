-- Review claims: the frame a reviewer has open in the console, until expires_us. A frame claimed by one
-- reviewer is not handed to another until the claim is released (a review, or the reviewer moving on) or
-- expires. One row per frame.
CREATE TABLE review_claims (
    edge_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    PRIMARY KEY (edge_id, incarnation, seq)
);
CREATE INDEX review_claims_reviewer ON review_claims (reviewer);

-- An edge's frame counters from its last heartbeat (since the edge process started), for the share it
-- forwards to the cloud.
ALTER TABLE edges ADD COLUMN frames_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN frames_forwarded BIGINT NOT NULL DEFAULT 0;
-- Its cameras' states from the last heartbeat, JSON [{"id", "up", "ended", "fps", "age_s", "error"}, ...].
ALTER TABLE edges ADD COLUMN cameras_json TEXT NOT NULL DEFAULT '[]';
