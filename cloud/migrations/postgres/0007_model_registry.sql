-- The model registry: signed model bundles published to the fleet, what each target should run, and every
-- change with who asked for it.

-- One row per published bundle. `sha256` is the archive's address, `signed` the operator's signed statement
-- (JSON envelope) exactly as published, `data` the archive that edges and workers download.
CREATE TABLE model_bundles (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    size BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    signed TEXT NOT NULL,
    data BYTEA NOT NULL,
    published_by TEXT NOT NULL,
    published_us BIGINT NOT NULL,
    UNIQUE (name, sequence)
);

-- What a target should run, per model name: an edge group (`edges/<group>`) or the cloud workers
-- (`workers`). `previous` is the bundle it ran before the last change (what a rollback returns to).
CREATE TABLE model_targets (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES model_bundles (sha256),
    previous TEXT REFERENCES model_bundles (sha256),
    rollback BOOLEAN NOT NULL DEFAULT FALSE,
    changed_by TEXT NOT NULL,
    changed_us BIGINT NOT NULL,
    PRIMARY KEY (target, name)
);

-- Every state change of the registry and of the machines it feeds, oldest first.
CREATE TABLE model_events (
    id BIGSERIAL PRIMARY KEY,
    at_us BIGINT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX model_events_subject ON model_events (subject, id);
