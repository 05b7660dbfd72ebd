-- The edge outbox: frames forwarded (or to be forwarded) to the cloud and not yet acknowledged.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY,   -- per-edge monotonic sequence (idempotency key with the edge id)
    frame_id        TEXT    NOT NULL,
    camera_id       TEXT    NOT NULL,
    capture_time_us INTEGER NOT NULL,
    reason          INTEGER NOT NULL,      -- wire ForwardReason: 1 suspect, 2 audit
    score           REAL    NOT NULL,      -- prescreen defect score
    encoding        INTEGER NOT NULL,      -- wire ImageEncoding
    bytes           INTEGER NOT NULL,      -- length of the image, what the disk budget counts
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL DEFAULT 0, -- not sent before this time; 0 = due now
    local_action    TEXT                        -- provisional line decision taken at the deadline, if any
);
CREATE INDEX outbox_due ON outbox (next_attempt_us, seq);
CREATE INDEX outbox_eviction ON outbox (reason DESC, score, seq);

-- Image bytes, apart from the metadata: scans of `outbox` (budget, backlog, startup) never read images.
CREATE TABLE outbox_image (
    seq   INTEGER PRIMARY KEY REFERENCES outbox (seq),
    image BLOB    NOT NULL
);

-- Every eviction, for audit: which frame left without a verdict, and why it was chosen.
CREATE TABLE evicted (
    seq        INTEGER PRIMARY KEY,
    reason     INTEGER NOT NULL,
    score      REAL    NOT NULL,
    bytes      INTEGER NOT NULL,
    evicted_us INTEGER NOT NULL
);

-- Small durable counters: the sequence reservation and the eviction count.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
