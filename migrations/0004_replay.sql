-- One row per `agora replay` run and projection: when it ran, how it ended
-- and how far it read. `agora projections` shows the last one of each. A run
-- killed before it could write its end is found `running` by the next run,
-- which marks it `interrupted` (the replay lock proves it is not running).
CREATE TABLE replay_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection  text        NOT NULL,
    mode        text        NOT NULL CHECK (mode IN ('replay', 'verify')),
    outcome     text        NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'swapped', 'verified', 'drifted', 'failed', 'interrupted')),
    events      bigint      NOT NULL DEFAULT 0,
    failures    bigint      NOT NULL DEFAULT 0,
    position    bigint,
    detail      text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX replay_runs_projection ON replay_runs (projection, id DESC);
