-- The payment deadline runs from the order's first charge attempt (a call,
-- or one the open circuit refused), not from its placement: time an order
-- spends queued inside Agora (behind a flash sale, say) is not the gateway
-- being down, and an order that cannot reserve stock is out of stock
-- whatever its age. NULL until the first attempt.
ALTER TABLE saga_orders ADD COLUMN charging_since timestamptz;
