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
-- The relay's hot claim (`outbox_pending`, in id order) holds no scheduled row: every order
-- inserts a deadline and its answer deletes it, and those rows (and their dead index entries
-- until a vacuum) would lengthen every claim's scan. Due scheduled rows are claimed through
-- `outbox_scheduled` instead, a range up to now.
DROP INDEX IF EXISTS outbox_pending;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND NOT dead AND due_at IS NULL;
