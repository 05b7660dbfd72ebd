-- Images stored as objects (see the SQLite migration 0007).
ALTER TABLE frames ADD COLUMN image_ref TEXT NOT NULL DEFAULT '';
