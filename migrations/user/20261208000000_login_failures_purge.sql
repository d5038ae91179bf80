-- The scheduled purge deletes failed logins of every email once they left the throttling
-- window (LOGIN_WINDOW_S): rows are appended in time order, so a BRIN index finds them cheaply.
CREATE INDEX login_failures_failed_at ON login_failures USING brin (failed_at);
