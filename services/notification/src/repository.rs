//! The notification service's SQL, checked at compile time against `migrations/notification`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::sender::NewNotification;

/// A stored notification.
#[derive(Debug, Clone)]
pub(crate) struct NotificationRow {
    pub(crate) notification_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) channel: String,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) source_event_type: String,
    pub(crate) source_event_id: String,
    pub(crate) order_id: String,
    pub(crate) created_at: DateTime<Utc>,
}

/// A user's contact.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
}

/// Records a notification.
pub(crate) async fn insert_notification(
    conn: &mut PgConnection,
    n: &NewNotification,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO notifications (notification_id, user_id, channel, recipient, subject, body, \
         source_event_type, source_event_id, order_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        n.notification_id,
        n.user_id,
        n.channel,
        n.recipient,
        n.subject,
        n.body,
        n.source_event_type,
        n.source_event_id,
        n.order_id,
        at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of a user's notifications, newest first, strictly older than `before`.
pub(crate) async fn list_notifications(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        "SELECT notification_id, user_id, channel, recipient, subject, body, source_event_type, \
                source_event_id, order_id, created_at \
         FROM notifications \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR notification_id < $2) \
         ORDER BY notification_id DESC LIMIT $3",
        user_id,
        before,
        limit
    )
    .fetch_all(conn)
    .await
}

/// A contact from `user.created`; fields set by an earlier-arriving `user.updated` are kept.
pub(crate) async fn contact_created(
    conn: &mut PgConnection,
    user_id: Uuid,
    email: &str,
    name: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contacts (user_id, email, name) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE \
         SET email = COALESCE(contacts.email, EXCLUDED.email), \
             name = COALESCE(contacts.name, EXCLUDED.name)",
        user_id,
        email,
        name
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A contact change from `user.updated` (only the fields that are set).
pub(crate) async fn contact_updated(
    conn: &mut PgConnection,
    user_id: Uuid,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contacts (user_id, email, name) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE \
         SET email = COALESCE(EXCLUDED.email, contacts.email), \
             name = COALESCE(EXCLUDED.name, contacts.name), \
             updated_at = now()",
        user_id,
        email,
        name
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's contact.
pub(crate) async fn find_contact(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Contact>, sqlx::Error> {
    sqlx::query_as!(
        Contact,
        "SELECT email, name FROM contacts WHERE user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await
}
