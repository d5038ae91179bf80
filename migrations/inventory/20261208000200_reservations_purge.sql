-- The scheduled purge deletes settled reservation records (FAILED, RELEASED) older than
-- RESERVATION_RETENTION_S; only those rows are indexed.
CREATE INDEX reservations_settled ON reservations (updated_at)
    WHERE status IN ('FAILED', 'RELEASED');
