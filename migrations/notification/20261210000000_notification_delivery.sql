-- Email delivery (docs/contract.md, "Notifications by email"): the notification is recorded
-- PENDING in the transaction that applies its event, and the dispatcher sends it after that
-- commit, marks it SENT or FAILED, and retries refusals with backoff. Rows from before: RECORDED.
ALTER TABLE notifications
    -- The email's HTML part (the text part is `body`).
    ADD COLUMN html_body       TEXT        NOT NULL DEFAULT '',
    ADD COLUMN delivery_status TEXT        NOT NULL DEFAULT 'RECORDED'
        CHECK (delivery_status IN ('PENDING', 'SENT', 'FAILED', 'RECORDED')),
    -- The mail server's last refusal, or why it could not be reached.
    ADD COLUMN delivery_error  TEXT        NOT NULL DEFAULT '',
    ADD COLUMN sent_at         TIMESTAMPTZ,
    -- Attempts that failed so far.
    ADD COLUMN attempts        INT         NOT NULL DEFAULT 0,
    -- When the dispatcher may try it next: a retry's backoff, or the lease of the attempt in
    -- progress (a dispatcher that crashed mid-send is retried once the lease ends).
    ADD COLUMN next_attempt_at TIMESTAMPTZ;

-- The dispatcher's claim: pending notifications that are due, oldest first.
CREATE INDEX notifications_pending ON notifications (next_attempt_at, notification_id)
    WHERE delivery_status = 'PENDING';
