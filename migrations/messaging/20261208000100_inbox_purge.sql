-- The scheduled purge deletes inbox rows older than INBOX_RETENTION_S: rows are appended in
-- time order, so a BRIN index finds them at almost no cost to the inserts.
CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);
