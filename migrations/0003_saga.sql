-- The order saga's durable work list: one row per order it drives. The
-- saga's JetStream consumer inserts a row for every placed order (and wakes it
-- again on a cancellation or refund); its step loop claims due rows with a
-- lease, moves the order on and records when to look again. The aggregates
-- are the truth about how far an order got; this row only remembers what the
-- aggregates cannot: the payment id chosen before the payment exists, how
-- many gateway calls were made, and whether the refund reached the gateway.
CREATE TABLE saga_orders (
    order_id        uuid PRIMARY KEY,
    placed_at       timestamptz NOT NULL,
    -- The placing request's correlation id, carried by the saga's commands.
    correlation_id  text,
    -- The placing request's W3C traceparent, so the saga's commands and its
    -- gateway calls continue that trace.
    traceparent     text,
    -- Chosen and stored before the Payment is created, so a step re-run after
    -- a crash reuses it (and with it the gateway's idempotency key).
    payment_id      uuid UNIQUE,
    done            boolean     NOT NULL DEFAULT false,
    -- Bumped by every event that wakes the row, so a step that finishes
    -- after such an event cannot mark the row done and lose the wake-up.
    generation      bigint      NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     uuid,
    lease_until     timestamptz,
    -- Charge calls started (counted before each call goes out): non-zero
    -- means money may have moved, so a cancellation must ask the gateway.
    charge_attempts integer     NOT NULL DEFAULT 0,
    -- Consecutive failed gateway calls: the exponent of the retry backoff.
    failures        integer     NOT NULL DEFAULT 0,
    refund_sent     boolean     NOT NULL DEFAULT false,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX saga_orders_due ON saga_orders (next_attempt_at) WHERE NOT done;
