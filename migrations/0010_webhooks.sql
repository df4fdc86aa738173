-- Webhooks (api.md, Webhooks): the endpoints an admin registers, and the
-- delivery log the webhook subscriber fills from the event stream and the
-- delivery loop works through. Neither is an event: an endpoint's secret
-- must never reach JetStream or a replay.

-- A registered endpoint. `secret` and `previous_secret` are sealed with
-- AES-256-GCM under a key derived from AGORA_JWT_SECRET (nonce || ciphertext
-- || tag, the endpoint's id as associated data), so a dump of this table
-- signs nothing; the previous secret still signs until `previous_until`
-- (24 h after a rotation).
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    description     text,
    status          text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    secret          bytea       NOT NULL,
    previous_secret bytea,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One domain event that some endpoint subscribed to: its webhook name and
-- the body every endpoint is sent, built once, as soon as the read model
-- has reached the event's version (whatever its deliveries wait for), so
-- every retry and every endpoint gets the same bytes.
CREATE TABLE webhook_events (
    -- The event's Nats-Msg-Id: `<aggregate_type>:<aggregate_id>:<sequence>`.
    event_id       text PRIMARY KEY,
    event_type     text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   uuid        NOT NULL,
    sequence       bigint      NOT NULL,
    occurred_at    timestamptz NOT NULL,
    body           bytea
);

-- One event for one endpoint. Its id is the `webhook-id` of every attempt.
-- A delivery waits while an earlier one (by sequence) of the same endpoint
-- and aggregate is pending; `leased_until` marks an attempt in flight, so a
-- process killed mid-attempt leaves a row that is tried again after it.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    endpoint_id      uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text        NOT NULL REFERENCES webhook_events (event_id) ON DELETE CASCADE,
    aggregate_id     uuid        NOT NULL,
    sequence         bigint      NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_events_unbuilt ON webhook_events (aggregate_id, sequence) WHERE body IS NULL;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, aggregate_id, sequence) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_endpoint ON webhook_deliveries (endpoint_id, id);
