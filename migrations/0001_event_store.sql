-- The event store. Columns up to `metadata` are postgres-es's layout, so its
-- stock repository reads this table unchanged. The three after it are ours:
-- `position` orders all events globally, `transaction_id` lets a reader tail in
-- commit order without skipping a slow transaction's events (compare it with
-- pg_snapshot_xmin of the current snapshot), and `recorded_at` is when the row
-- was written, inside the committing transaction.
CREATE TABLE events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 1),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        jsonb  NOT NULL,
    metadata       jsonb  NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_transaction ON events (transaction_id);

-- postgres-es's snapshot layout, kept so its stock snapshot store can be run
-- against this database (the benchmark baseline does). Agora itself uses
-- aggregate_snapshots below.
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          json   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- The latest state of an aggregate, written in the same statement as the
-- events that produced it, so it can never drift from the stream.
CREATE TABLE aggregate_snapshots (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    payload        jsonb  NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Values that must be unique across aggregates (a user's email, a product's
-- sku). A claim is inserted in the same statement as the event that takes the
-- value, so two racing registrations cannot both commit.
CREATE TABLE unique_claims (
    kind           text NOT NULL,
    value          text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (kind, value)
);
CREATE INDEX unique_claims_owner ON unique_claims (aggregate_type, aggregate_id);

-- Idempotency-Key records: shared by every API process and kept across restarts.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('in_flight', 'completed')),
    status       smallint,
    etag         text,
    location     text,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
