-- Parked outbox rows, counted by the metrics sampler every few seconds
-- (shop_outbox_dead_messages): a partial index keeps that count off the table of published
-- rows, which holds an hour of events.
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (id) WHERE dead;
