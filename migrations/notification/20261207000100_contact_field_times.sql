-- Each contact field keeps the time of the event that set it, so an older user.updated that
-- arrives after a newer one changes nothing (the newest value of each field wins).
-- NULL: set before this column existed, older than any event.
ALTER TABLE contacts ADD COLUMN email_time TIMESTAMPTZ, ADD COLUMN name_time TIMESTAMPTZ;
