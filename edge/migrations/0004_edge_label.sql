-- The prescreen's defect class for each held suspect ('' when its prescreen has no classes or it was not
-- flagged by class), so that a per-class offline policy applies after a restart too.
ALTER TABLE outbox ADD COLUMN edge_label TEXT NOT NULL DEFAULT '';
