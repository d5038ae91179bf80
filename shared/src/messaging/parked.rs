//! Outbox rows parked as `dead` after `OUTBOX_MAX_ATTEMPTS` failures of their own (a broker
//! outage never parks a row), for operators: listed, and returned to the relay once what broke
//! them is fixed (`shop outbox parked`, `shop outbox unpark`), with no hand-written SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// One parked row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Parked {
    /// Its message id.
    pub message_id: uuid::Uuid,
    /// Its routing key.
    pub routing_key: String,
    /// Its full protobuf type name.
    pub message_type: String,
    /// The failed publishes that parked it.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was staged.
    pub created_at: DateTime<Utc>,
}

/// The parked rows, oldest first, at most `limit`.
pub async fn list(conn: &mut PgConnection, limit: i64) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT message_id, routing_key, message_type, attempts, last_error, created_at \
         FROM outbox WHERE dead ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Returns parked rows to the relay with their attempts reset: those with the given message
/// ids, or every one when `message_ids` is `None`. Wakes the relays. Returns how many.
pub async fn unpark(
    conn: &mut PgConnection,
    message_ids: Option<&[uuid::Uuid]>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE outbox SET dead = false, attempts = 0, next_attempt_at = NULL \
         WHERE dead AND ($1::uuid[] IS NULL OR message_id = ANY($1))",
    )
    .bind(message_ids)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() > 0 {
        super::outbox::notify_relays(conn).await?;
    }
    Ok(done.rows_affected())
}
