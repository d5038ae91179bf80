//! Staging events in the caller's transaction (published if and only if it commits), and
//! reaching the relays: in-process after a commit ([`OutboxWaker`]: the committed events handed
//! over, or a wake-up), or from elsewhere with `NOTIFY shop_outbox` ([`notify_relays`]).

use shop_proto::Event;
use sqlx::PgConnection;

use crate::messaging::envelope::{Envelope, EventContext, MessageId};

/// The NOTIFY channel relays LISTEN on.
pub const NOTIFY_CHANNEL: &str = "shop_outbox";

/// The most envelopes waiting for the fast path; beyond them a commit wakes the claiming
/// relay instead (the rows are in the table either way).
const MAX_HANDED_OFF: usize = 10_000;

/// How the code that commits staged events reaches the relay of its own process: it hands
/// the committed events over ([`OutboxWaker::committed`]: the fast path publishes them at once,
/// without reading them back), or wakes the relay to claim what is in the table
/// ([`OutboxWaker::wake`]). In-process: no database round trip, no commit-time lock.
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(std::sync::Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// Wakes the claiming loop.
    claim: tokio::sync::Notify,
    /// Wakes the fast path.
    handed: tokio::sync::Notify,
    /// Events committed and handed over, not taken by the fast path yet.
    queue: std::sync::Mutex<Vec<Envelope>>,
    /// Whether a relay's fast path takes hand-offs (while its session runs).
    open: std::sync::atomic::AtomicBool,
    /// When something was last handed over (milliseconds since the Unix epoch).
    last_hand_off_ms: std::sync::atomic::AtomicU64,
}

impl OutboxWaker {
    /// A waker no relay listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the relay to claim staged rows (or makes its next wait return at once).
    pub fn wake(&self) {
        self.0.claim.notify_one();
    }

    /// After the commit of a transaction that staged `envelopes` (exactly those, as staged):
    /// hands them to this process's relay, which publishes them at once and marks their rows
    /// afterwards. When no relay session takes hand-offs (none runs, or it is reconnecting) or
    /// too many wait, wakes the relay to claim them from the table instead.
    pub fn committed(&self, envelopes: Vec<Envelope>) {
        use std::sync::atomic::Ordering;
        if envelopes.is_empty() {
            return;
        }
        if self.0.open.load(Ordering::Acquire) {
            let mut queue = self.queue();
            if queue.len() + envelopes.len() <= MAX_HANDED_OFF {
                queue.extend(envelopes);
                drop(queue);
                self.0.last_hand_off_ms.store(unix_ms(), Ordering::Release);
                self.0.handed.notify_one();
                return;
            }
        }
        self.wake();
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Envelope>> {
        self.0.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn woken(&self) {
        self.0.claim.notified().await;
    }

    /// Opens or closes the fast path; what waits is dropped (its rows are in the table, and
    /// the claiming relay publishes them).
    pub(super) fn take_hand_offs(&self, open: bool) {
        self.0
            .open
            .store(open, std::sync::atomic::Ordering::Release);
        self.queue().clear();
    }

    /// Waits until something was handed over (at once when something was since the last take).
    pub(super) async fn handed(&self) {
        self.0.handed.notified().await;
    }

    /// Takes what was handed over.
    pub(super) fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.queue())
    }

    /// Whether hand-offs are open and something was handed over less than `period` ago: the
    /// fast path may be publishing rows that young.
    pub(super) fn fast_path_in_use(&self, period: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let last = self.0.last_hand_off_ms.load(Ordering::Acquire);
        self.0.open.load(Ordering::Acquire)
            && last > 0
            && unix_ms().saturating_sub(last) <= period.as_millis() as u64
    }

    /// How many hand-offs wait.
    pub(super) fn waiting(&self) -> usize {
        self.queue().len()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
