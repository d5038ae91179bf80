//! The transactional outbox: events are staged in the same database transaction as the state
//! change that caused them, and a relay publishes them afterwards with publisher confirms.
//!
//! A staged event is published if and only if its transaction commits (at least once: a crash
//! between the confirm and the UPDATE publishes it again, and the consumers' inbox absorbs the
//! duplicate). The relay:
//! - claims rows with `FOR UPDATE SKIP LOCKED`, so several relays (replicas) never publish the
//!   same row at the same time;
//! - publishes a batch pipelined (every publish sent, then every confirm awaited) and marks the
//!   confirmed rows published with one UPDATE;
//! - publishes what its own process committed at once, without reading it back: the committing
//!   code hands the events over after the commit ([`OutboxWaker::committed`], the fast path),
//!   and the rows are marked after the confirm; the claim is for the rest (rows a crash, a
//!   broker outage or another process left, scheduled messages);
//! - claims when woken ([`OutboxWaker::wake`]), on `LISTEN shop_outbox` for writers elsewhere
//!   ([`notify_relays`]), and polls as the fallback; while the fast path is in use a round
//!   leaves rows younger than the confirm timeout to it (a per-commit NOTIFY trigger would serialise every commit:
//!   see the migration `20261123000001_outbox_wake_in_process.sql`);
//! - isolates a row that keeps failing: a failed row is retried alone, after a delay, and
//!   parked as `dead` after `max_attempts`, so it never blocks the rows behind it;
//! - purges published rows after the retention period;
//! - counts what it published per routing key, its failed publishes and how long its rounds
//!   take, in the service's [`Metrics`].
//!
//! # Layout
//! - `stage` — staging in the caller's transaction, and reaching the relays.
//! - `fast` — the fast path: events handed over after their commit, published at once.
//! - `relay` — the [`Relay`]: its loop, the claim, the purge.
//! - `publish` — one round's messages sent pipelined, each producer span, the confirms.
//! - `round` — what a round did with each row, recorded in its transaction.

/// The outbox columns an [`Envelope`](crate::messaging::Envelope) fills when it is staged, in
/// the order every statement binds them: written once, for `concat!` into each statement.
/// (`query!` statements, as the order service's one-statement order insert, need a literal
/// and keep their own list; `outbox_columns_are_the_envelope_s` checks it names these.)
macro_rules! staged_columns {
    () => {
        "message_id, routing_key, message_type, payload, correlation_id, causation_id, \
         traceparent, tracestate, actor_id, subject"
    };
}

/// What the relay reads of a row to publish it: the staged columns and its bookkeeping.
macro_rules! claimed_columns {
    () => {
        concat!("id, ", staged_columns!(), ", created_at, attempts")
    };
}

mod fast;
mod publish;
mod relay;
mod round;
mod stage;

pub use relay::{Relay, RelayConfig, RoundOutcome};
pub(super) use stage::insert;
pub use stage::{
    NOTIFY_CHANNEL, OutboxWaker, notify_relays, stage, stage_envelope, stage_envelopes,
    stage_shapes,
};
