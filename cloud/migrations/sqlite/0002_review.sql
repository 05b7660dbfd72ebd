-- Review, presence, retention and leases.

-- Image retention: the image column is cleared when an image ages out or the image budget is full; the
-- frame row and its verdict stay.
ALTER TABLE frames ADD COLUMN image_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE frames ADD COLUMN image_pruned_us INTEGER;
UPDATE frames SET image_bytes = LENGTH(image) WHERE image IS NOT NULL;
-- Which worker judged the frame (scale-out diagnostics).
ALTER TABLE verdicts ADD COLUMN worker_id TEXT NOT NULL DEFAULT '';
CREATE INDEX frames_received ON frames (received_us);
CREATE INDEX frames_capture ON frames (capture_time_us);

-- One row per edge, fed by its retained presence (birth / last will) and its heartbeats.
CREATE TABLE edges (
    edge_id               TEXT    NOT NULL PRIMARY KEY,
    site                  TEXT    NOT NULL,
    line                  TEXT    NOT NULL,
    online                INTEGER NOT NULL DEFAULT 0,
    last_seen_us          INTEGER NOT NULL DEFAULT 0,
    backlog_frames        INTEGER NOT NULL DEFAULT 0,
    oldest_backlog_age_ms INTEGER NOT NULL DEFAULT 0,
    edge_model_version    TEXT    NOT NULL DEFAULT ''
);

-- Human review labels, a history per frame; the latest counts.
CREATE TABLE reviews (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    edge_id   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    label     TEXT    NOT NULL,
    defective INTEGER NOT NULL,
    reviewer  TEXT    NOT NULL,
    note      TEXT    NOT NULL,
    time_us   INTEGER NOT NULL,
    FOREIGN KEY (edge_id, seq) REFERENCES frames (edge_id, seq)
);
CREATE INDEX reviews_frame ON reviews (edge_id, seq);

-- Model versions seen, per tier ('edge' prescreen or 'cloud' full model).
CREATE TABLE model_versions (
    tier          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    first_seen_us INTEGER NOT NULL,
    PRIMARY KEY (tier, version)
);

-- Leader leases for jobs that must run once (retention). `token` only grows: it is the fencing token.
CREATE TABLE leases (
    name       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    token      INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
