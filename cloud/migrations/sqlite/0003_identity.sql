-- Frame identity that survives loss of an edge's outbox: frames are keyed by (edge_id, incarnation, seq),
-- where the incarnation is the random id of the edge outbox that numbered them ('' from edges that predate
-- it), and every frame and verdict row carries the SHA-256 of the image (empty from such edges). A delivery
-- whose key is stored with another image is a different frame: it is stored under the incarnation
-- '<incarnation>#<first 16 hex digits of its hash>'. SQLite cannot change a primary key in place, so the
-- three tables are rebuilt.
DROP VIEW disagreements;

CREATE TABLE frames_v3 (
    edge_id            TEXT    NOT NULL,
    incarnation        TEXT    NOT NULL DEFAULT '',
    seq                INTEGER NOT NULL,
    frame_id           TEXT    NOT NULL,
    site               TEXT    NOT NULL,
    line               TEXT    NOT NULL,
    camera_id          TEXT    NOT NULL,
    capture_time_us    INTEGER NOT NULL,
    reason             INTEGER NOT NULL,
    edge_score         REAL    NOT NULL,
    edge_model_version TEXT    NOT NULL,
    image_encoding     INTEGER NOT NULL,
    image              BLOB,
    received_us        INTEGER NOT NULL,
    deliveries         INTEGER NOT NULL DEFAULT 1,
    edge_local_action  TEXT    NOT NULL DEFAULT '',
    image_bytes        INTEGER NOT NULL DEFAULT 0,
    image_pruned_us    INTEGER,
    image_sha256       BLOB    NOT NULL DEFAULT x'',
    PRIMARY KEY (edge_id, incarnation, seq)
);
INSERT INTO frames_v3 (edge_id, seq, frame_id, site, line, camera_id, capture_time_us, reason, edge_score,
    edge_model_version, image_encoding, image, received_us, deliveries, edge_local_action, image_bytes,
    image_pruned_us)
SELECT edge_id, seq, frame_id, site, line, camera_id, capture_time_us, reason, edge_score, edge_model_version,
    image_encoding, image, received_us, deliveries, edge_local_action, image_bytes, image_pruned_us
FROM frames;

CREATE TABLE verdicts_v3 (
    edge_id             TEXT    NOT NULL,
    incarnation         TEXT    NOT NULL DEFAULT '',
    seq                 INTEGER NOT NULL,
    cloud_model_version TEXT    NOT NULL,
    label               TEXT    NOT NULL,
    defective           INTEGER NOT NULL,
    defect_score        REAL    NOT NULL,
    scores_json         TEXT    NOT NULL,
    error               TEXT    NOT NULL,
    verdict_time_us     INTEGER NOT NULL,
    worker_id           TEXT    NOT NULL DEFAULT '',
    image_sha256        BLOB    NOT NULL DEFAULT x'',  -- the image this verdict judged
    PRIMARY KEY (edge_id, incarnation, seq),
    FOREIGN KEY (edge_id, incarnation, seq) REFERENCES frames_v3 (edge_id, incarnation, seq)
);
INSERT INTO verdicts_v3 (edge_id, seq, cloud_model_version, label, defective, defect_score, scores_json, error,
    verdict_time_us, worker_id)
SELECT edge_id, seq, cloud_model_version, label, defective, defect_score, scores_json, error, verdict_time_us,
    worker_id
FROM verdicts;

CREATE TABLE reviews_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    edge_id     TEXT    NOT NULL,
    incarnation TEXT    NOT NULL DEFAULT '',
    seq         INTEGER NOT NULL,
    label       TEXT    NOT NULL,
    defective   INTEGER NOT NULL,
    reviewer    TEXT    NOT NULL,
    note        TEXT    NOT NULL,
    time_us     INTEGER NOT NULL,
    FOREIGN KEY (edge_id, incarnation, seq) REFERENCES frames_v3 (edge_id, incarnation, seq)
);
INSERT INTO reviews_v3 (id, edge_id, seq, label, defective, reviewer, note, time_us)
SELECT id, edge_id, seq, label, defective, reviewer, note, time_us FROM reviews;

DROP TABLE reviews;
DROP TABLE verdicts;
DROP TABLE frames;
ALTER TABLE frames_v3 RENAME TO frames;
ALTER TABLE verdicts_v3 RENAME TO verdicts;
ALTER TABLE reviews_v3 RENAME TO reviews;

CREATE INDEX verdicts_time ON verdicts (verdict_time_us);
CREATE INDEX frames_received ON frames (received_us);
CREATE INDEX frames_capture ON frames (capture_time_us);
CREATE INDEX frames_seq ON frames (edge_id, seq);
CREATE INDEX reviews_frame ON reviews (edge_id, incarnation, seq);

CREATE VIEW disagreements AS
SELECT f.edge_id, f.incarnation, f.seq, f.frame_id, f.edge_local_action, v.label, v.defective, v.verdict_time_us
FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
WHERE f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != (v.defective != 0));
