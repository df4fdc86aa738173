-- Per subscriber (each projection, the saga's intake): how far the repair
-- has checked, in the relay's (transaction_id, position) order, that every
-- committed event of the aggregates it follows was applied. Events before
-- the watermark are applied or dead-lettered; after it, `agora projections`
-- counts what is not applied yet (the lag, measured against the events
-- table, not the stream).
CREATE TABLE subscriber_watermarks (
    name           text PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    -- Events the repair found missing and applied from the events table.
    repaired       bigint      NOT NULL DEFAULT 0,
    checked_at     timestamptz
);

-- The notifications model keeps whose payment each is, so a refund finds
-- its user with one lookup (the fold loads only the rows an event names).
ALTER TABLE rm_notification_payments ADD COLUMN user_id uuid;
UPDATE rm_notification_payments p SET user_id = o.user_id
  FROM rm_notification_orders o WHERE o.order_id = p.order_id;
-- A payment whose order was never mapped could never notify anyone.
DELETE FROM rm_notification_payments WHERE user_id IS NULL;
ALTER TABLE rm_notification_payments ALTER COLUMN user_id SET NOT NULL;

