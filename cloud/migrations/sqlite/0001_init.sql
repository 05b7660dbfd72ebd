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
    edge_local_action  TEXT    NOT NULL DEFAULT '', -- the edge's local decision when the verdict was late
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

-- Frames the edge decided locally where the cloud's verdict says otherwise: a rejected part the cloud
-- finds good, or a passed (quarantined) part the cloud finds defective.
CREATE VIEW disagreements AS
SELECT f.edge_id, f.seq, f.frame_id, f.edge_local_action, v.label, v.defective, v.verdict_time_us
FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.seq = f.seq
WHERE f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != (v.defective != 0));
