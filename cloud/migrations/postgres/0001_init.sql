-- The cloud schema on PostgreSQL; the same tables as the SQLite migrations 0001 and 0002.

-- Frames the cloud received, one row per (edge_id, seq) however often it was delivered.
CREATE TABLE frames (
    edge_id            TEXT             NOT NULL,
    seq                BIGINT           NOT NULL,
    frame_id           TEXT             NOT NULL,
    site               TEXT             NOT NULL,
    line               TEXT             NOT NULL,
    camera_id          TEXT             NOT NULL,
    capture_time_us    BIGINT           NOT NULL,
    reason             INTEGER          NOT NULL,   -- wire ForwardReason
    edge_score         DOUBLE PRECISION NOT NULL,
    edge_model_version TEXT             NOT NULL,
    image_encoding     INTEGER          NOT NULL,
    image              BYTEA,                       -- NULL once retention removed it
    image_bytes        BIGINT           NOT NULL DEFAULT 0,
    image_pruned_us    BIGINT,
    received_us        BIGINT           NOT NULL,
    deliveries         BIGINT           NOT NULL DEFAULT 1,
    edge_local_action  TEXT             NOT NULL DEFAULT '',
    PRIMARY KEY (edge_id, seq)
);
CREATE INDEX frames_received ON frames (received_us);
CREATE INDEX frames_capture ON frames (capture_time_us);

-- Exactly one verdict per frame.
CREATE TABLE verdicts (
    edge_id             TEXT             NOT NULL,
    seq                 BIGINT           NOT NULL,
    cloud_model_version TEXT             NOT NULL,
    label               TEXT             NOT NULL,
    defective           BOOLEAN          NOT NULL,
    defect_score        DOUBLE PRECISION NOT NULL,
    scores_json         TEXT             NOT NULL,
    error               TEXT             NOT NULL,
    verdict_time_us     BIGINT           NOT NULL,
    worker_id           TEXT             NOT NULL DEFAULT '',  -- which worker judged it
    PRIMARY KEY (edge_id, seq),
    FOREIGN KEY (edge_id, seq) REFERENCES frames (edge_id, seq)
);
CREATE INDEX verdicts_time ON verdicts (verdict_time_us);

CREATE VIEW disagreements AS
SELECT f.edge_id, f.seq, f.frame_id, f.edge_local_action, v.label, v.defective, v.verdict_time_us
FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.seq = f.seq
WHERE f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective);

CREATE TABLE edges (
    edge_id               TEXT    NOT NULL PRIMARY KEY,
    site                  TEXT    NOT NULL,
    line                  TEXT    NOT NULL,
    online                BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen_us          BIGINT  NOT NULL DEFAULT 0,
    backlog_frames        BIGINT  NOT NULL DEFAULT 0,
    oldest_backlog_age_ms BIGINT  NOT NULL DEFAULT 0,
    edge_model_version    TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE reviews (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    edge_id   TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    label     TEXT    NOT NULL,
    defective BOOLEAN NOT NULL,
    reviewer  TEXT    NOT NULL,
    note      TEXT    NOT NULL,
    time_us   BIGINT  NOT NULL,
    FOREIGN KEY (edge_id, seq) REFERENCES frames (edge_id, seq)
);
CREATE INDEX reviews_frame ON reviews (edge_id, seq);

CREATE TABLE model_versions (
    tier          TEXT   NOT NULL,
    version       TEXT   NOT NULL,
    first_seen_us BIGINT NOT NULL,
    PRIMARY KEY (tier, version)
);

CREATE TABLE leases (
    name       TEXT   NOT NULL PRIMARY KEY,
    holder     TEXT   NOT NULL,
    token      BIGINT NOT NULL,
    expires_us BIGINT NOT NULL
);
