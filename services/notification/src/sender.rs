//! How a notification leaves the system. The default [`DatabaseSender`] records it in the
//! service's database (in the handler's transaction, so it is recorded exactly once) and
//! logs it; a real email or SMS sender would implement [`Sender`] the same way.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::repository;

/// A notification to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Its id (UUID v7).
    pub notification_id: Uuid,
    /// Whom it is for.
    pub user_id: Uuid,
    /// How it is sent, e.g. `email`.
    pub channel: String,
    /// Where it is sent.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// The text.
    pub body: String,
    /// The full type name of the causing event.
    pub source_event_type: String,
    /// The message id of the causing event.
    pub source_event_id: String,
    /// The order it is about, or empty.
    pub order_id: String,
}

/// Sends notifications. Called inside the consumer's transaction: an error rolls the
/// message back and it is retried.
#[async_trait::async_trait]
pub trait Sender: std::fmt::Debug + Send + Sync + 'static {
    /// Sends (and records) one notification.
    async fn send(
        &self,
        conn: &mut PgConnection,
        notification: &NewNotification,
    ) -> Result<(), sqlx::Error>;
}

/// The default sender: writes the notification to the database and logs it.
#[derive(Debug, Default, Clone, Copy)]
pub struct DatabaseSender;

#[async_trait::async_trait]
impl Sender for DatabaseSender {
    async fn send(&self, conn: &mut PgConnection, n: &NewNotification) -> Result<(), sqlx::Error> {
        repository::insert_notification(conn, n, shop_shared::time::now()).await?;
        tracing::info!(
            notification_id = %n.notification_id,
            user_id = %n.user_id,
            channel = %n.channel,
            subject = %n.subject,
            source = %n.source_event_type,
            "notification sent"
        );
        Ok(())
    }
}
