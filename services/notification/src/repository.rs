//! The notification service's SQL, checked at compile time against `migrations/notification`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shop_shared::ids::{NotificationId, UserId};
use sqlx::PgConnection;

use shop_saga::contact::{Contact as StampedContact, stamped, unstamped};

use crate::delivery::DeliveryStatus;
use crate::record::NewNotification;

/// A stored notification.
#[derive(Debug, Clone)]
pub(crate) struct NotificationRow {
    pub(crate) notification_id: NotificationId,
    pub(crate) user_id: UserId,
    pub(crate) channel: String,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) source_event_type: String,
    pub(crate) source_event_id: String,
    pub(crate) order_id: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) delivery_status: DeliveryStatus,
    pub(crate) delivery_error: String,
    pub(crate) sent_at: Option<DateTime<Utc>>,
}

/// A notification the dispatcher claimed, with what its email needs.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) notification_id: NotificationId,
    pub(crate) channel: String,
    pub(crate) recipient: String,
    pub(crate) subject: String,
    pub(crate) body: String,
    pub(crate) html_body: String,
    /// Failed attempts before this one.
    pub(crate) attempts: i32,
}

/// A user's contact.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
}

/// Records notifications, each with its delivery status, in one statement.
pub(crate) async fn insert_notifications(
    conn: &mut PgConnection,
    notifications: &[(NewNotification, DeliveryStatus)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let column = |f: fn(&NewNotification) -> &str| -> Vec<String> {
        notifications.iter().map(|(n, _)| f(n).to_owned()).collect()
    };
    let ids: Vec<uuid::Uuid> = notifications
        .iter()
        .map(|(n, _)| n.notification_id.as_uuid())
        .collect();
    let users: Vec<uuid::Uuid> = notifications
        .iter()
        .map(|(n, _)| n.user_id.as_uuid())
        .collect();
    let statuses: Vec<String> = notifications
        .iter()
        .map(|(_, status)| status.as_str().to_owned())
        .collect();
    sqlx::query!(
        "INSERT INTO notifications (notification_id, user_id, channel, recipient, subject, body, \
         source_event_type, source_event_id, order_id, created_at, html_body, delivery_status) \
         SELECT id, user_id, channel, recipient, subject, body, source_event_type, \
                source_event_id, order_id, $10, html_body, delivery_status \
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $11::text[], $12::text[]) \
              AS n(id, user_id, channel, recipient, subject, body, source_event_type, \
                   source_event_id, order_id, html_body, delivery_status)",
        &ids,
        &users,
        &column(|n| &n.channel),
        &column(|n| &n.recipient),
        &column(|n| &n.subject),
        &column(|n| &n.body),
        &column(|n| &n.source_event_type),
        &column(|n| &n.source_event_id),
        &column(|n| &n.order_id),
        at,
        &column(|n| &n.html_body),
        &statuses
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of a user's notifications, newest first, strictly older than `before`.
pub(crate) async fn list_notifications(
    conn: &mut PgConnection,
    user_id: UserId,
    before: Option<NotificationId>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as!(
        NotificationRow,
        r#"SELECT notification_id AS "notification_id: NotificationId",
                  user_id AS "user_id: UserId", channel, recipient, subject, body,
                  source_event_type, source_event_id, order_id, created_at,
                  delivery_status AS "delivery_status: DeliveryStatus", delivery_error, sent_at
           FROM notifications
           WHERE user_id = $1 AND ($2::uuid IS NULL OR notification_id < $2)
           ORDER BY notification_id DESC LIMIT $3"#,
        user_id.as_uuid(),
        before.map(NotificationId::as_uuid),
        limit
    )
    .fetch_all(conn)
    .await
}

/// Claims up to `limit` pending notifications that are due, oldest first, for `lease`: another
/// dispatcher (`SKIP LOCKED`, then the lease) leaves them alone until the lease ends, so a
/// dispatcher that dies mid-send has them retried then. Committed at once: no transaction is
/// held open while the mail server answers.
pub(crate) async fn claim_pending(
    conn: &mut PgConnection,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "UPDATE notifications SET next_attempt_at = now() + make_interval(secs => $2) \
         WHERE notification_id IN ( \
             SELECT notification_id FROM notifications \
             WHERE delivery_status = 'PENDING' \
               AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
             ORDER BY next_attempt_at NULLS FIRST, notification_id LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING notification_id AS \"notification_id: NotificationId\", channel, recipient, \
                   subject, body, html_body, attempts",
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(conn)
    .await
}

/// The mail server took the notification.
pub(crate) async fn mark_sent(
    conn: &mut PgConnection,
    notification_id: NotificationId,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE notifications SET delivery_status = 'SENT', sent_at = $2, delivery_error = '', \
         next_attempt_at = NULL WHERE notification_id = $1 AND delivery_status = 'PENDING'",
        notification_id.as_uuid(),
        at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An attempt failed: FAILED for good (`retry_in` `None`), or PENDING again after `retry_in`.
pub(crate) async fn mark_failed_attempt(
    conn: &mut PgConnection,
    notification_id: NotificationId,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    let status = if retry_in.is_some() {
        DeliveryStatus::Pending
    } else {
        DeliveryStatus::Failed
    };
    sqlx::query!(
        "UPDATE notifications SET attempts = attempts + 1, delivery_error = $2, \
         delivery_status = $3, \
         next_attempt_at = CASE WHEN $4::float8 IS NULL THEN NULL \
                                ELSE now() + make_interval(secs => $4) END \
         WHERE notification_id = $1 AND delivery_status = 'PENDING'",
        notification_id.as_uuid(),
        error,
        status.as_str(),
        retry_in.map(|d| d.as_secs_f64())
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How many notifications wait to be sent.
pub(crate) async fn count_pending(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let count =
        sqlx::query_scalar!("SELECT count(*) FROM notifications WHERE delivery_status = 'PENDING'")
            .fetch_one(conn)
            .await?;
    Ok(count.unwrap_or(0))
}

/// When the next pending notification is due (`None`: none is pending).
pub(crate) async fn next_due(
    conn: &mut PgConnection,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let due = sqlx::query_scalar!(
        "SELECT min(coalesce(next_attempt_at, created_at)) FROM notifications \
         WHERE delivery_status = 'PENDING'"
    )
    .fetch_one(conn)
    .await?;
    Ok(due)
}

/// A user's contact with the time each field was set, locked until the transaction ends. The
/// row is created empty first, so two events about a new user take turns on it.
pub(crate) async fn lock_contact(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<StampedContact, sqlx::Error> {
    sqlx::query!(
        "INSERT INTO contacts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user_id.as_uuid()
    )
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query!(
        "SELECT email, email_time, name, name_time FROM contacts WHERE user_id = $1 FOR UPDATE",
        user_id.as_uuid()
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
    user_id: UserId,
    contact: &StampedContact,
) -> Result<(), sqlx::Error> {
    let (email, email_time) = unstamped(contact.email.as_ref());
    let (name, name_time) = unstamped(contact.name.as_ref());
    sqlx::query!(
        "UPDATE contacts SET email = $2, email_time = $3, name = $4, name_time = $5, \
         updated_at = now() WHERE user_id = $1",
        user_id.as_uuid(),
        email,
        email_time,
        name,
        name_time
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The contacts of `users` that exist.
pub(crate) async fn find_contacts(
    conn: &mut PgConnection,
    users: &[UserId],
) -> Result<HashMap<UserId, Contact>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let rows = sqlx::query!(
        "SELECT user_id, email, name FROM contacts WHERE user_id = ANY($1)",
        &ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let contact = Contact {
                email: r.email,
                name: r.name,
            };
            (UserId::from(r.user_id), contact)
        })
        .collect())
}
