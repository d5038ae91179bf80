//! Scheduled messages: an event staged in the outbox for a later time, under a key, in the same
//! transaction as the state change that calls for it; cancelled by that key in a later
//! transaction (a no-op once it was published).
//!
//! Nothing is held in memory: the row is the schedule. The relay claims only rows that are due
//! (`due_at <= now()`, with `FOR UPDATE SKIP LOCKED` as for every row, so replicas never both
//! publish one), and a restart loses nothing. A cancellation can lose the race against the
//! publication (the relay claimed the row a moment before): the handler of a scheduled message
//! must therefore check the state it acts on, as every handler does. No broker plugin: the
//! delayed-message exchange keeps messages on one node and cannot cancel them.
//!
//! A scheduled row is published at most one relay poll (`OUTBOX_POLL_MS`) after it is due.

use chrono::{DateTime, Utc};
use shop_proto::Event;
use sqlx::PgConnection;

use super::envelope::MessageId;
use super::{Envelope, EventContext};

/// Stages `event` to be published at `due`, under `key` (one unpublished message per key:
/// staging a key that is already scheduled fails with a unique violation). Returns its
/// message id.
pub async fn stage_at<E: Event>(
    conn: &mut PgConnection,
    event: &E,
    context: &EventContext,
    due: DateTime<Utc>,
    key: &str,
) -> Result<MessageId, sqlx::Error> {
    let envelope = Envelope::new(event, "", context);
    stage_envelope_at(conn, &envelope, due, key).await?;
    Ok(envelope.message_id)
}

/// Stages a prepared envelope to be published at `due`, under `key`.
pub async fn stage_envelope_at(
    conn: &mut PgConnection,
    envelope: &Envelope,
    due: DateTime<Utc>,
    key: &str,
) -> Result<(), sqlx::Error> {
    super::outbox::insert(conn, envelope, Some(due), Some(key)).await
}

/// Cancels the unpublished messages scheduled under `keys`; returns how many there were (a key
/// already published, cancelled or never scheduled counts nothing).
pub async fn cancel(conn: &mut PgConnection, keys: &[String]) -> Result<u64, sqlx::Error> {
    if keys.is_empty() {
        return Ok(0);
    }
    let done =
        sqlx::query("DELETE FROM outbox WHERE schedule_key = ANY($1) AND published_at IS NULL")
            .bind(keys)
            .execute(conn)
            .await?;
    Ok(done.rows_affected())
}

/// A scheduled message, as `shop schedule` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Scheduled {
    /// The outbox row.
    pub id: i64,
    /// Its key.
    pub schedule_key: Option<String>,
    /// When it is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Its message id.
    pub message_id: uuid::Uuid,
    /// Its type (`shop.order.v1.ReservationDeadline`).
    pub message_type: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its body.
    pub payload: Vec<u8>,
    /// Its correlation id.
    pub correlation_id: String,
    /// When it was staged.
    pub created_at: DateTime<Utc>,
}

/// The unpublished scheduled messages, soonest first, at most `limit`.
pub async fn list(conn: &mut PgConnection, limit: i64) -> Result<Vec<Scheduled>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, schedule_key, due_at, message_id, message_type, routing_key, payload, \
                correlation_id, created_at \
         FROM outbox WHERE due_at IS NOT NULL AND published_at IS NULL \
         ORDER BY due_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}
