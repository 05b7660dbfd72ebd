-- Images stored as objects (a directory or S3-compatible storage) instead of in `image`: the object's key.
-- '' when the image is in `image`, was never kept, or was removed by retention.
ALTER TABLE frames ADD COLUMN image_ref TEXT NOT NULL DEFAULT '';
