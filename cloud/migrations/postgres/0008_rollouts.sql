-- Staged model rollouts (canary), driven by the rollout controller under its leader lease.

-- What each edge reports with its heartbeats for the rollout gates: the group it follows for updates, and
-- its suspects' decision latency p99 over the last heartbeat interval.
ALTER TABLE edges ADD COLUMN update_group TEXT NOT NULL DEFAULT '';
ALTER TABLE edges ADD COLUMN decision_p99_us BIGINT NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN decisions BIGINT NOT NULL DEFAULT 0;

-- One row per rollout of a bundle to an edge group. `stages` (JSON) is the plan fixed at the start,
-- `members` (JSON) the group's edges at the start, `progress` (JSON) what each edge did. `rev` grows with
-- every change, so the controller and an operator never overwrite each other's change unseen.
CREATE TABLE rollouts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES model_bundles (sha256),
    version TEXT NOT NULL,
    previous TEXT NOT NULL REFERENCES model_bundles (sha256),
    previous_version TEXT NOT NULL,
    state TEXT NOT NULL,
    stage BIGINT NOT NULL,
    stage_started_us BIGINT NOT NULL,
    stages TEXT NOT NULL,
    members TEXT NOT NULL,
    progress TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX rollouts_state ON rollouts (state, id);
-- At most one unfinished rollout per group and model, even when two are started at once.
CREATE UNIQUE INDEX rollouts_one_open ON rollouts (grp, name)
    WHERE state IN ('running', 'paused', 'rolling-back');
