-- What the order service knows of each user, kept from user.created / user.updated: an order
-- is only accepted for a customer known here (CONTRACT.md: FAILED_PRECONDITION otherwise).
CREATE TABLE customers (
    customer_id UUID        PRIMARY KEY,
    email       TEXT,
    name        TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    -- UUID v7: time-ordered, so ordering by id is ordering by creation (cursor pagination).
    order_id        UUID        PRIMARY KEY,
    customer_id     UUID        NOT NULL,
    -- The line items as given: [{product_id, quantity, unit_price_cents}, …].
    items           JSONB       NOT NULL,
    total_cents     BIGINT      NOT NULL CHECK (total_cents >= 0),
    status          TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    status_reason   TEXT        NOT NULL DEFAULT '',
    -- A retried CreateOrder with the same key from the same customer returns this order.
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT orders_idempotency_key UNIQUE (customer_id, idempotency_key)
);

-- ListOrders: a customer's orders, newest first.
CREATE INDEX orders_customer ON orders (customer_id, order_id DESC);
