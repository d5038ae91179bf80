//! The `shop` command's library: running the whole system in one process, for `shop up`, for
//! the benchmark and for the system tests.
//!
//! # Layout
//! - [`system`] — the four services started together, and stopped together.
//! - [`bench`] — `shop bench`: load, limits, consistency.
//! - [`catalog`] — `shop catalog`: the AsyncAPI document of the events.
//! - [`settings`] — the environment variables, for `--help`.
//! - [`dlq`] — `shop dlq`: dead letters read, replayed and purged.
//! - [`events_tail`] — `shop events tail`: the events as they pass.
//! - [`schedule`] — `shop schedule`: the messages an outbox holds for later.
//! - [`outbox`] — `shop outbox`: parked outbox rows listed and returned to the relay.
//! - [`topology`] — `shop topology`: every consuming service's queue, declared for operators.
//! - [`broker`], [`decoded`] — what those two share: the connection, the decoded view.

// The benchmark's JSON report is one `json!` object with many keys.
#![recursion_limit = "256"]

pub mod bench;
pub mod broker;
pub mod catalog;
pub mod decoded;
pub mod dlq;
pub mod events_tail;
pub mod keys;
pub mod outbox;
pub mod schedule;
pub mod settings;
pub mod system;
pub mod topology;
