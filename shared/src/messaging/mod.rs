//! Reliable messaging over RabbitMQ: typed events, a transactional outbox, an inbox for
//! exactly-once effects, retries with backoff, dead letters, confirms and reconnection.
//!
//! # Layout
//! - [`names`] — every exchange and queue name, from one prefix.
//! - [`topology`] — the declarations (exchange, quorum queue, retry queues, DLQ) and the table
//!   of who consumes what.
//! - [`envelope`] — the AMQP properties and headers of docs/contract.md, decoding deliveries.
//! - [`outbox`] — staging events in a transaction, and the relay that publishes them.
//! - [`consumer`] — subscriptions, the inbox, batching, retries and dead-lettering.
//! - [`connection`] — connecting, backoff, and the supervise loop that owns recovery.
//! - [`link`] — the two connections of a process (publish, consume) its sessions share.
//! - [`parked`] — outbox rows parked after failures of their own, listed and returned.
//! - [`quarantine`] — a delivery the AMQP client cannot parse, moved to the DLQ unread.
//! - [`retry`] — the backoff policy of transient failures.
//! - [`settings`] — [`MessagingConfig`]: batches, retries, rounds, retention, replicas.
//! - [`schedule`] — messages staged in the outbox for a later time, cancellable by key.
//! - [`shapes`] — one event staged in several shapes (a v1 beside its v2), one message id.
//!
//! The delivery guarantee is at-least-once on the wire and exactly-once in effect: a message
//! may arrive twice (a relay crashed before marking a row, a consumer crashed before its ack),
//! and the inbox makes the second arrival a no-op.

pub mod connection;
pub mod consumer;
pub mod envelope;
#[cfg(test)]
mod envelope_fuzz;
pub mod link;
pub mod names;
pub mod outbox;
pub mod parked;
pub mod quarantine;
pub mod retry;
pub mod schedule;
pub mod settings;
pub mod shapes;
pub mod topology;

pub use consumer::{
    BatchState, BatchView, Consumer, Handle, HandlerContext, HandlerError, StatefulSubscriptions,
    Subscriptions, event_id,
};
pub use envelope::{DecodeError, Envelope, EventContext, IncomingMeta, MessageId};
pub use link::{Link, Links};
pub use names::Names;
pub use outbox::{OutboxWaker, Relay, RelayConfig, stage, stage_shapes};
pub use retry::RetryPolicy;
pub use settings::MessagingConfig;
pub use shapes::{Retired, Shapes};
