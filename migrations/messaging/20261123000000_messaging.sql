-- The messaging tables every service database has: the transactional outbox (events staged in
-- the same transaction as the state change that caused them) and the consumer inbox (which
-- message ids a consumer has already applied). Provided once, merged into every service's
-- migrator by shop_shared::db::migrate.

CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    -- UUID v7, the AMQP message_id and the consumers' de-duplication key.
    message_id     UUID        NOT NULL UNIQUE,
    routing_key    TEXT        NOT NULL,
    -- Full protobuf message name, the AMQP `type` property.
    message_type   TEXT        NOT NULL,
    payload        BYTEA       NOT NULL,
    correlation_id TEXT        NOT NULL,
    causation_id   TEXT,
    -- W3C trace context of the span that staged the event, so the relay continues its trace.
    traceparent    TEXT,
    tracestate     TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at   TIMESTAMPTZ,
    -- Failed publish attempts; past the relay's limit the row is parked (dead) so one bad row
    -- never blocks the others.
    attempts       INT         NOT NULL DEFAULT 0,
    last_error     TEXT,
    dead           BOOLEAN     NOT NULL DEFAULT FALSE,
    -- After a failed publish, the row waits until then before it is tried again.
    next_attempt_at TIMESTAMPTZ
);

-- The relay's work queue: only unpublished, live rows, in staging order.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND NOT dead;
-- The purge of published rows past their retention.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake the relay as soon as a transaction that staged events commits (NOTIFY is delivered at
-- commit, never for a rolled-back transaction). One notification per statement, not per row.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('shop_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    consumer     TEXT        NOT NULL,
    message_id   TEXT        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
