-- Stock per product. The CHECK constraints are the last line of defence against overselling:
-- whatever the concurrency, no transaction can commit a negative count.
CREATE TABLE stock (
    product_id TEXT        PRIMARY KEY,
    available  BIGINT      NOT NULL CHECK (available >= 0),
    reserved   BIGINT      NOT NULL CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per order the inventory has heard of, whichever event came first.
--   RESERVED   every item reserved (items holds what), released on cancellation
--   FAILED     nothing reserved (shortages)
--   RELEASED   was RESERVED, then the order was cancelled
--   CANCELLED  the cancellation came first (a tombstone): a late order.created reserves nothing
CREATE TABLE reservations (
    order_id   UUID        PRIMARY KEY,
    status     TEXT        NOT NULL CHECK (status IN ('RESERVED', 'FAILED', 'RELEASED', 'CANCELLED')),
    items      JSONB       NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
