-- Where the cloud model found defects (see the SQLite migration 0005).
ALTER TABLE verdicts ADD COLUMN regions_json TEXT NOT NULL DEFAULT '[]';
