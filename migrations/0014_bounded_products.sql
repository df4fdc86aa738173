-- Products keep only their open reservations and a window of the last ended
-- ones (domain::product::SETTLED_WINDOW), no longer every reservation ever
-- made. Snapshots taken in the old shape would not read anyway (the store
-- then replays the stream); deleting them saves each product that warning
-- and makes its next load rebuild the bounded state from the events, which
-- do not change.
DELETE FROM aggregate_snapshots WHERE aggregate_type = 'product';
DELETE FROM snapshots WHERE aggregate_type = 'product';

-- A cancelled order's stock is given back once. A product may no longer
-- remember a reservation that ended long ago, so the saga must not ask it
-- again when it repeats the order's step (a refund the gateway keeps
-- refusing). Rows in flight at the upgrade give back once more, which is a
-- no-op for every reservation their products remember.
ALTER TABLE saga_orders ADD COLUMN stock_given_back boolean NOT NULL DEFAULT false;
