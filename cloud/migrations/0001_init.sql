-- Frames the cloud received, one row per (edge_id, seq) however often it was delivered.
CREATE TABLE frames (
    edge_id            TEXT    NOT NULL,
    seq                INTEGER NOT NULL,
    frame_id           TEXT    NOT NULL,
    site               TEXT    NOT NULL,
    line               TEXT    NOT NULL,
    camera_id          TEXT    NOT NULL,
    capture_time_us    INTEGER NOT NULL,
    reason             INTEGER NOT NULL,   -- wire ForwardReason
    edge_score         REAL    NOT NULL,
    edge_model_version TEXT    NOT NULL,
    image_encoding     INTEGER NOT NULL,
    image              BLOB,
    received_us        INTEGER NOT NULL,
    deliveries         INTEGER NOT NULL DEFAULT 1,  -- how often the frame arrived (QoS 1 and edge resends)
    PRIMARY KEY (edge_id, seq)
);

-- Exactly one verdict per frame.
CREATE TABLE verdicts (
    edge_id             TEXT    NOT NULL,
    seq                 INTEGER NOT NULL,
    cloud_model_version TEXT    NOT NULL,
    label               TEXT    NOT NULL,
    defective           INTEGER NOT NULL,
    defect_score        REAL    NOT NULL,
    scores_json         TEXT    NOT NULL,
    error               TEXT    NOT NULL,
    verdict_time_us     INTEGER NOT NULL,
    PRIMARY KEY (edge_id, seq),
    FOREIGN KEY (edge_id, seq) REFERENCES frames (edge_id, seq)
);
CREATE INDEX verdicts_time ON verdicts (verdict_time_us);
