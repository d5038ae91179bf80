//! The notification service's SQL, checked at compile time against `migrations/notification`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use shop_saga::contact::{Contact as StampedContact, stamped, unstamped};

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

/// A user's contact with the time each field was set, locked until the transaction ends. The
/// row is created empty first, so two events about a new user take turns on it.
pub(crate) async fn lock_contact(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<StampedContact, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contacts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user_id
    )
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query!(
        "SELECT email, email_time, name, name_time FROM contacts WHERE user_id = $1 FOR UPDATE",
        user_id
    )
    .fetch_one(conn)
    .await?;
    Ok(StampedContact {
        email: stamped(row.email, row.email_time),
        name: stamped(row.name, row.name_time),
    })
}

/// Writes a user's (locked) contact back.
pub(crate) async fn store_contact(
    conn: &mut PgConnection,
    user_id: Uuid,
    contact: &StampedContact,
) -> Result<(), sqlx::Error> {
    let (email, email_time) = unstamped(contact.email.as_ref());
    let (name, name_time) = unstamped(contact.name.as_ref());
    sqlx::query!(
        "UPDATE contacts SET email = $2, email_time = $3, name = $4, name_time = $5, \
         updated_at = now() WHERE user_id = $1",
        user_id,
        email,
        email_time,
        name,
        name_time
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
