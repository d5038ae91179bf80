-- CloudEvents `subject` (what the event is about: the order's or the user's id), staged with
-- the row so the relay can send it (docs/contract.md, Events).
ALTER TABLE outbox ADD COLUMN subject TEXT;

-- One event may be staged in several shapes (a v1 and a v2 beside it) under one message_id:
-- the id stays unique per shape, i.e. per routing key.
ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_message_id_routing_key_key UNIQUE (message_id, routing_key);
