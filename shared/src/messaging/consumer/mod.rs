//! Consuming events with exactly-once effects: decode, de-duplicate in the inbox, apply the
//! handler in the same transaction, commit, and only then acknowledge.
//!
//! A service registers one handler per event type in [`Subscriptions`]; the queue's bindings
//! are derived from that list, so a routing key is never typed twice. Each consumer channel
//! runs its batches one after another:
//!
//! 1. take the deliveries that are ready (up to `batch_size`);
//! 2. decode each by its `type` property; what cannot be decoded goes to the DLQ at once;
//! 3. in ONE transaction: insert every `(consumer, message_id)` into the inbox (a conflict
//!    means already applied: skipped), run the handlers, which write their effects and stage
//!    their events through the same transaction, commit;
//! 4. acknowledge the whole batch with one multiple-ack, after the commit.
//!
//! If a handler fails, the batch transaction is rolled back and its messages are applied one
//! per transaction, so one failure never takes its neighbours down. A transient failure is
//! republished to a retry queue (the TTL brings it back after the backoff); a permanent one,
//! or the last attempt, goes to `<queue>.dlq` with `x-death-reason`. Those copies are
//! confirmed by the broker before the original is acknowledged: nothing is dropped.
//!
//! A failure of the database or the broker itself ends the session without acknowledging:
//! the broker redelivers, the inbox absorbs what was already applied.
//!
//! Every settled delivery is timed into `messaging_process_duration_seconds` with its outcome
//! (applied, duplicate, retried, dead-lettered), from the start of its batch to the ack; the
//! session also samples the depth of the service's dead-letter queue.
//!
//! # Layout
//! - this file: what a service author writes against — [`Handle`], [`HandlerContext`],
//!   [`HandlerError`], the batch's [`BatchState`] — and [`Subscriptions`] (in `subscriptions`).
//! - `subscriptions` — the handlers by event type, their bindings, the batch state they share.
//! - `session` — the [`Consumer`]: connecting, consuming, batching, acknowledging.
//! - `sample` — the queue and dead-letter depths, sampled in the background.
//! - `apply` — decoding a batch, the inbox, the handlers in one transaction (or one each).
//! - `divert` — retry and dead-letter copies, confirmed before the original is acknowledged.

mod apply;
mod divert;
mod sample;
mod session;
mod subscriptions;

use std::any::Any;

use shop_proto::Event;
use sqlx::PgConnection;

use crate::messaging::envelope::{Envelope, EventContext, IncomingMeta, MessageId};
use crate::telemetry::propagation::TraceFields;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (a lock timeout, a dependency down): retried with backoff.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (an invalid payload): dead-lettered at once.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// A permanent failure with a message.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self::Permanent(anyhow::anyhow!("{message}"))
    }

    /// A transient failure with a message.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Self::Transient(anyhow::anyhow!("{message}"))
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Database errors inside a handler are transient: the message is tried again. Kept as
    /// sqlx's own line: it already says what its source says, which `{:#}` would repeat.
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(anyhow::anyhow!("{e}"))
    }
}

/// What a handler gets besides the event: the transaction, the message's metadata, and the
/// state its batch loaded (`S`, see [`BatchState`]; `()` for handlers that need none).
#[derive(Debug)]
pub struct HandlerContext<'c, S = ()> {
    conn: &'c mut PgConnection,
    meta: &'c IncomingMeta,
    staged: &'c mut Vec<Envelope>,
    counted: &'c mut Vec<&'static str>,
    state: &'c mut S,
}

impl<S> HandlerContext<'_, S> {
    /// The transaction the handler's effects belong to; it commits before the ack.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// Adds one to the service's counter `name` once the batch has committed (nothing if it
    /// rolls back): a count of effects, not of attempts.
    pub fn count(&mut self, name: &'static str) {
        self.counted.push(name);
    }

    /// The state the batch loaded before its first message, as the messages before this one
    /// left it; what the handlers leave in it is stored before the commit.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// The message's id, type, correlation id and trace context.
    pub fn meta(&self) -> &IncomingMeta {
        self.meta
    }

    /// The context for events caused by this message: same flow, caused by it, and the
    /// trace context of the handler's consumer span, so the next hop continues this trace.
    pub fn child_context(&self) -> EventContext {
        let mut context = self.meta.child_context();
        let trace = TraceFields::current();
        if trace.traceparent.is_some() {
            context.traceparent = trace.traceparent;
            context.tracestate = trace.tracestate;
        }
        context
    }

    /// Stages an event caused by this message in the handler's transaction; returns its
    /// message id. The consumer writes the outbox rows of a whole batch in one statement just
    /// before the commit, so they commit with the handler's effects or not at all.
    pub fn stage<E: Event>(&mut self, event: &E) -> MessageId {
        let envelope = Envelope::new(event, "", &self.child_context());
        let id = envelope.message_id;
        self.staged.push(envelope);
        id
    }
}

/// A handler of one event type, working on its batch's state `S` (none by default).
#[async_trait::async_trait]
pub trait Handle<E: Event, S: Send + Sync + 'static = ()>: Send + Sync + 'static {
    /// Applies `event`. Everything it writes goes through `cx.conn()` or `cx.state()`, so it
    /// commits with the inbox row or not at all.
    async fn handle(&self, event: &E, cx: &mut HandlerContext<'_, S>) -> Result<(), HandlerError>;
}

/// The fresh (not yet applied) events of one batch, for [`BatchState::load`].
#[derive(Debug)]
pub struct BatchView<'a> {
    events: Vec<(&'a str, &'a (dyn Any + Send + Sync))>,
}

impl<'a> BatchView<'a> {
    /// The batch's events of type `E`, in delivery order.
    pub fn events<E: Event>(&self) -> impl Iterator<Item = &'a E> + '_ {
        self.events
            .iter()
            .filter(|(type_name, _)| *type_name == E::TYPE_NAME)
            .filter_map(|(_, event)| event.downcast_ref::<E>())
    }
}

/// What a service's handlers decide on, loaded once per batch transaction and stored once.
///
/// [`BatchState::load`] runs after the inbox and before the first handler, with every event
/// the handlers are about to apply: it reads (and locks, in a fixed order, so batches on
/// several channels or replicas wait for each other instead of deadlocking) the rows their
/// decisions need. Each handler then decides on the state in delivery order, as the messages
/// before it left it, and [`BatchState::store`] writes the result before the commit. A batch
/// therefore has exactly the effects of its messages applied one at a time in delivery order
/// (docs/contract.md, "Batches are invisible"), in a few statements instead of a few per
/// message. An error in either is handled like a handler's: the batch rolls back and its
/// messages are applied one per transaction.
#[async_trait::async_trait]
pub trait BatchState: Sized + Send + Sync + 'static {
    /// Loads what the batch's handlers decide on.
    async fn load(conn: &mut PgConnection, batch: &BatchView<'_>) -> Result<Self, HandlerError>;

    /// Writes what the handlers decided, before the commit.
    async fn store(self, conn: &mut PgConnection) -> Result<(), HandlerError>;
}

/// No state: the handlers write through the transaction themselves.
#[async_trait::async_trait]
impl BatchState for () {
    async fn load(_: &mut PgConnection, _: &BatchView<'_>) -> Result<Self, HandlerError> {
        Ok(())
    }

    async fn store(self, _: &mut PgConnection) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// The one parser of an id field in an event a handler reads (`order_id`, `user_id`, …):
/// exactly a UUID's text, or a permanent failure that names the field (the message is
/// dead-lettered: it will never parse).
pub fn event_id<I: crate::ids::Id>(raw: &str) -> Result<I, HandlerError> {
    crate::ids::parse_exact(raw).map_err(HandlerError::permanent)
}

pub use session::Consumer;
pub use subscriptions::{OTHER_LABEL, StatefulSubscriptions, Subscriptions};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_is_said_once() {
        let e = HandlerError::from(sqlx::Error::Io(std::io::Error::other("connection lost")));
        let text = e.to_string();
        assert_eq!(text.matches("connection lost").count(), 1, "{text}");
        assert!(text.starts_with("transient failure: "), "{text}");
    }
}
