-- The relay's progress: the position of the last event it saw acknowledged
-- by JetStream. One row per relay name (one per deployment).
CREATE TABLE relay_checkpoints (
    name       text PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per projection: the highest global position applied, for lag, and when.
CREATE TABLE projection_checkpoints (
    projection     text PRIMARY KEY,
    position       bigint      NOT NULL DEFAULT 0,
    events_applied bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Per projection and aggregate: the last sequence applied. Written in the same
-- transaction as the read-model change, so an event is applied exactly once:
-- a redelivered one (sequence <= last) is skipped, one ahead of a gap
-- (sequence > last + 1) waits for the missing one.
CREATE TABLE projection_applied (
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

-- Events a projection could not decode or apply after its retries; the
-- worker went on without them.
CREATE TABLE dead_letters (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection     text        NOT NULL,
    subject        text        NOT NULL,
    stream_sequence bigint     NOT NULL,
    aggregate_type text,
    aggregate_id   text,
    sequence       bigint,
    message        text        NOT NULL,
    error          text        NOT NULL,
    deliveries     bigint      NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, stream_sequence)
);

-- Read models. `version` is the number of the aggregate's events reflected.
CREATE TABLE rm_users (
    id          uuid PRIMARY KEY,
    email       text        NOT NULL,
    email_lower text        NOT NULL,
    name        text        NOT NULL,
    status      text        NOT NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX rm_users_email ON rm_users (email_lower);

CREATE TABLE rm_products (
    id             uuid PRIMARY KEY,
    sku            text        NOT NULL,
    name           text        NOT NULL,
    description    text,
    price_amount   bigint      NOT NULL,
    price_currency text        NOT NULL,
    available      bigint      NOT NULL,
    reserved       bigint      NOT NULL,
    status         text        NOT NULL,
    version        bigint      NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX rm_products_status ON rm_products (status, id);

CREATE TABLE rm_orders (
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL,
    lines          jsonb       NOT NULL,
    total_amount   bigint      NOT NULL,
    total_currency text        NOT NULL,
    status         text        NOT NULL,
    cancel_reason  text,
    payment_id     uuid,
    version        bigint      NOT NULL,
    placed_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX rm_orders_user ON rm_orders (user_id, id DESC);

CREATE TABLE rm_payments (
    id              uuid PRIMARY KEY,
    order_id        uuid        NOT NULL,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    status          text        NOT NULL,
    attempts        integer     NOT NULL,
    last_error      text,
    version         bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX rm_payments_order ON rm_payments (order_id);

-- Notifications, one per (source event, kind): the key makes a redelivered
-- event unable to notify twice. The two maps let order and payment events
-- find their user without reading another projection's tables.
CREATE TABLE rm_notifications (
    id             uuid PRIMARY KEY,
    user_id        uuid        NOT NULL,
    kind           text        NOT NULL,
    order_id       uuid,
    source         text        NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL
);
CREATE INDEX rm_notifications_user ON rm_notifications (user_id, created_at DESC, id DESC);

CREATE TABLE rm_notification_orders (
    order_id uuid PRIMARY KEY,
    user_id  uuid NOT NULL
);

CREATE TABLE rm_notification_payments (
    payment_id uuid PRIMARY KEY,
    order_id   uuid NOT NULL
);

-- The relay tails the events table in (transaction_id, position) order:
-- every transaction not yet visible has an id at or above the snapshot's
-- xmin, above every id already relayed, so none is ever skipped.
DROP INDEX events_transaction;
CREATE INDEX events_transaction_position ON events (transaction_id, position);
ALTER TABLE relay_checkpoints ADD COLUMN transaction_id xid8 NOT NULL DEFAULT '0';
