-- Each user's contact, kept from user.created / user.updated.
CREATE TABLE contacts (
    user_id    UUID        PRIMARY KEY,
    email      TEXT,
    name       TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What shop told its users, one row per notification sent.
CREATE TABLE notifications (
    -- UUID v7: id order is creation order (cursor pagination).
    notification_id   UUID        PRIMARY KEY,
    user_id           UUID        NOT NULL,
    channel           TEXT        NOT NULL,
    recipient         TEXT        NOT NULL,
    subject           TEXT        NOT NULL,
    body              TEXT        NOT NULL,
    source_event_type TEXT        NOT NULL,
    source_event_id   TEXT        NOT NULL,
    order_id          TEXT        NOT NULL DEFAULT '',
    created_at        TIMESTAMPTZ NOT NULL
);

-- ListNotifications: a user's notifications, newest first.
CREATE INDEX notifications_user ON notifications (user_id, notification_id DESC);
