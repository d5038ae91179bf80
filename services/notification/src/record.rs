//! Recording a notification, in the transaction that applies the event that calls for it:
//! PENDING when a mail server is configured (the dispatcher sends it after the commit, woken by
//! a `NOTIFY` that PostgreSQL delivers only then), RECORDED when none is. Nothing is sent from
//! inside the transaction: a rolled-back and redelivered event never emails anyone twice.

use shop_shared::ids::{NotificationId, UserId};
use sqlx::PgConnection;

use crate::delivery::DeliveryStatus;
use crate::repository;

/// The channel the dispatchers listen on.
pub const NOTIFY_CHANNEL: &str = "shop_notifications";

/// A notification to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Its id (UUID v7).
    pub notification_id: NotificationId,
    /// Whom it is for.
    pub user_id: UserId,
    /// How it is sent, e.g. `email`.
    pub channel: String,
    /// Where it is sent.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// The text (the email's text part).
    pub body: String,
    /// The email's HTML part.
    pub html_body: String,
    /// The full type name of the causing event.
    pub source_event_type: String,
    /// The message id of the causing event.
    pub source_event_id: String,
    /// The order it is about, or empty.
    pub order_id: String,
}

/// Records `notifications`, each with its status, in one statement; a PENDING one wakes the
/// dispatchers once the transaction commits.
pub async fn record(
    conn: &mut PgConnection,
    notifications: &[(NewNotification, DeliveryStatus)],
) -> Result<(), sqlx::Error> {
    if notifications.is_empty() {
        return Ok(());
    }
    repository::insert_notifications(conn, notifications, shop_shared::time::now()).await?;
    if notifications
        .iter()
        .any(|(_, status)| *status == DeliveryStatus::Pending)
    {
        // Delivered by PostgreSQL at commit, never for a transaction that rolls back.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(conn)
            .await?;
    }
    for (n, status) in notifications {
        tracing::info!(
            notification_id = %n.notification_id,
            user_id = %n.user_id,
            channel = %n.channel,
            source = %n.source_event_type,
            delivery = status.as_str(),
            "notification recorded"
        );
    }
    Ok(())
}
