-- Carts (issue 15): the carts read model, and what orders gained.

-- An order placed from a cart names it; a shipping address (required at a
-- cart's checkout, optional on POST /orders); a customer's cancel note.
ALTER TABLE rm_orders
    ADD COLUMN cart_id          uuid,
    ADD COLUMN shipping_address jsonb,
    ADD COLUMN cancel_note      text;

-- One row per cart. `lines` is `[{product_id, quantity}]` in the order they
-- were added; prices and availability are joined from rm_products when read,
-- so a cart always shows today's. `token_hash` is the hex SHA-256 of a guest
-- cart's token, never shown.
CREATE TABLE rm_carts (
    id          uuid PRIMARY KEY,
    user_id     uuid,
    token_hash  text,
    status      text        NOT NULL,
    lines       jsonb       NOT NULL,
    order_id    uuid,
    merged_into uuid,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX rm_carts_user ON rm_carts (user_id, id DESC) WHERE user_id IS NOT NULL;
-- The expiry timer's scan: open carts by their last change.
CREATE INDEX rm_carts_open ON rm_carts (updated_at) WHERE status = 'open';
