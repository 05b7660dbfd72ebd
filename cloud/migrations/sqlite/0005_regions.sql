-- Where the cloud model found defects: a JSON list of {x, y, w, h, class, score} in frame pixels. Verdicts
-- stored before this migration, and verdicts of whole-frame classifiers, have none.
ALTER TABLE verdicts ADD COLUMN regions_json TEXT NOT NULL DEFAULT '[]';
