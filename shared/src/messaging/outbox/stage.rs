//! Staging events in the caller's transaction (published if and only if it commits), and
//! waking the relays: in-process after a commit ([`OutboxWaker`]), or from elsewhere with
//! `NOTIFY shop_outbox` ([`notify_relays`]).

use shop_proto::Event;
use sqlx::PgConnection;

use crate::messaging::envelope::{Envelope, EventContext, MessageId};

/// The NOTIFY channel relays LISTEN on.
pub const NOTIFY_CHANNEL: &str = "shop_outbox";

/// Wakes the relay of this process after a commit that staged events: the in-process,
/// zero-cost path (no database round trip, no commit-time lock).
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(std::sync::Arc<tokio::sync::Notify>);

impl OutboxWaker {
    /// A waker no relay listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the relay (or makes its next wait return at once).
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub(super) async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Wakes every relay on the database, for a writer outside a service process (a tool that
/// staged rows): `NOTIFY shop_outbox`. Services use their [`OutboxWaker`] instead.
pub async fn notify_relays(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stages `event` in the caller's transaction: it is published after the transaction commits,
/// and never if it rolls back. Returns the event's message id.
///
/// Only an [`Event`] (a proto message with a routing key) can be staged: a resource such as a
/// `User` is a compile error, not a runtime surprise.
///
/// ```compile_fail,E0277
/// use shop_proto::user::v1::User;
/// use shop_shared::messaging::{EventContext, stage};
///
/// async fn publish_user(conn: &mut sqlx::PgConnection) {
///     let _ = stage(conn, &User::default(), &EventContext::new_flow()).await;
/// }
/// ```
pub async fn stage<E: Event>(
    conn: &mut PgConnection,
    event: &E,
    context: &EventContext,
) -> Result<MessageId, sqlx::Error> {
    let envelope = Envelope::new(event, "", context);
    stage_envelope(conn, &envelope).await?;
    Ok(envelope.message_id)
}

/// Stages one event in several shapes (a v1 beside its v2: [`super::shapes`]) in the caller's
/// transaction, one row per shape not `retired`, all under one message id, which it returns.
pub async fn stage_shapes(
    conn: &mut PgConnection,
    shapes: crate::messaging::Shapes,
    retired: &crate::messaging::Retired,
) -> Result<MessageId, sqlx::Error> {
    let message_id = shapes.message_id();
    stage_envelopes(conn, &shapes.to_publish(retired)).await?;
    Ok(message_id)
}

/// Stages a prepared envelope (its `app_id` is ignored: the relay sets its own).
pub async fn stage_envelope(
    conn: &mut PgConnection,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    insert(conn, envelope, None, None).await
}

/// Inserts one outbox row: published as soon as possible, or (with `due` and `key`) not before
/// `due`, cancellable by `key` ([`super::schedule`]).
pub(in crate::messaging) async fn insert(
    conn: &mut PgConnection,
    envelope: &Envelope,
    due: Option<chrono::DateTime<chrono::Utc>>,
    key: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO outbox (",
        staged_columns!(),
        ", due_at, schedule_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(envelope.message_id)
    .bind(&envelope.routing_key)
    .bind(&envelope.message_type)
    .bind(&envelope.payload)
    .bind(&envelope.correlation_id)
    .bind(&envelope.causation_id)
    .bind(&envelope.traceparent)
    .bind(&envelope.tracestate)
    .bind(&envelope.actor_id)
    .bind(&envelope.subject)
    .bind(due)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stages many prepared envelopes in one statement (how a consumer batch stages the events
/// of all its handlers: one round trip instead of one per event).
pub async fn stage_envelopes(
    conn: &mut PgConnection,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.message_id.as_uuid()).collect();
    let column = |f: fn(&Envelope) -> &String| envelopes.iter().map(f).cloned().collect::<Vec<_>>();
    let optional = |f: fn(&Envelope) -> &Option<String>| {
        envelopes
            .iter()
            .map(f)
            .cloned()
            .collect::<Vec<Option<String>>>()
    };
    let payloads: Vec<Vec<u8>> = envelopes.iter().map(|e| e.payload.clone()).collect();
    sqlx::query(concat!(
        "INSERT INTO outbox (",
        staged_columns!(),
        ") SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], \
                                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])"
    ))
    .bind(&ids)
    .bind(column(|e| &e.routing_key))
    .bind(column(|e| &e.message_type))
    .bind(&payloads)
    .bind(column(|e| &e.correlation_id))
    .bind(optional(|e| &e.causation_id))
    .bind(optional(|e| &e.traceparent))
    .bind(optional(|e| &e.tracestate))
    .bind(optional(|e| &e.actor_id))
    .bind(column(|e| &e.subject))
    .execute(conn)
    .await?;
    Ok(())
}
