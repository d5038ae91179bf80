-- Scheduled messages (shared::messaging::schedule): a row staged for a later time is published
-- once `due_at` has passed; a later transaction may cancel it by its key while it is unpublished.
ALTER TABLE outbox ADD COLUMN due_at TIMESTAMPTZ;
ALTER TABLE outbox ADD COLUMN schedule_key TEXT;
-- One unpublished message per key; cancelling looks it up by key.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_schedule_key ON outbox (schedule_key)
  WHERE schedule_key IS NOT NULL AND published_at IS NULL;
-- What `shop_outbox_scheduled_messages` counts and `shop schedule list` lists.
CREATE INDEX IF NOT EXISTS outbox_scheduled ON outbox (due_at)
  WHERE due_at IS NOT NULL AND published_at IS NULL;
