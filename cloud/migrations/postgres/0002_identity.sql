-- Frame identity that survives loss of an edge's outbox (see the SQLite migration 0003): frames, verdicts and
-- reviews are keyed by (edge_id, incarnation, seq), and frame and verdict rows carry the image's SHA-256.
DROP VIEW disagreements;

ALTER TABLE reviews DROP CONSTRAINT reviews_edge_id_seq_fkey;
ALTER TABLE verdicts DROP CONSTRAINT verdicts_edge_id_seq_fkey;
ALTER TABLE verdicts DROP CONSTRAINT verdicts_pkey;
ALTER TABLE frames DROP CONSTRAINT frames_pkey;

ALTER TABLE frames ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
ALTER TABLE frames ADD COLUMN image_sha256 BYTEA NOT NULL DEFAULT '\x';
ALTER TABLE verdicts ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
ALTER TABLE verdicts ADD COLUMN image_sha256 BYTEA NOT NULL DEFAULT '\x';
ALTER TABLE reviews ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';

ALTER TABLE frames ADD PRIMARY KEY (edge_id, incarnation, seq);
ALTER TABLE verdicts ADD PRIMARY KEY (edge_id, incarnation, seq);
ALTER TABLE verdicts ADD FOREIGN KEY (edge_id, incarnation, seq) REFERENCES frames (edge_id, incarnation, seq);
ALTER TABLE reviews ADD FOREIGN KEY (edge_id, incarnation, seq) REFERENCES frames (edge_id, incarnation, seq);
DROP INDEX reviews_frame;
CREATE INDEX reviews_frame ON reviews (edge_id, incarnation, seq);
CREATE INDEX frames_seq ON frames (edge_id, seq);

CREATE VIEW disagreements AS
SELECT f.edge_id, f.incarnation, f.seq, f.frame_id, f.edge_local_action, v.label, v.defective, v.verdict_time_us
FROM frames f JOIN verdicts v ON v.edge_id = f.edge_id AND v.incarnation = f.incarnation AND v.seq = f.seq
WHERE f.edge_local_action != '' AND ((f.edge_local_action = 'reject') != v.defective);
