-- The relay's hot claim (`outbox_pending`, in id order) holds no scheduled row: every order
-- inserts a deadline and its answer deletes it, and those rows (and their dead index entries
-- until a vacuum) would lengthen every claim's scan. Due scheduled rows are claimed through
-- `outbox_scheduled` instead, a range up to now.
DROP INDEX IF EXISTS outbox_pending;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND NOT dead AND due_at IS NULL;
