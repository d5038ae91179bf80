//! The order service: accepts orders and drives the order saga from its side. CreateOrder
//! writes the order (PENDING) and stages `order.created` in one transaction; the inventory's
//! answer (`inventory.reserved` / `inventory.reservation_failed`) confirms or rejects it, and
//! CancelOrder cancels it. It keeps a customer profile per user from the user events, and only
//! accepts orders from customers it knows.
//!
//! # Layout
//! - [`config`] — settings.
//! - [`startup`] — [`Application`]: build and run.
//! - `grpc`: the tonic `OrderService`: proto → domain → proto, nothing else.
//! - `orders`: one use-case function per RPC (authorize, validate, write, stage).
//! - [`domain`] — validated orders, statuses, page tokens.
//! - `repository`: the SQL.
//! - `events`: the consumed events' handlers and the published events.
//! - [`error`] — [`OrderError`] and its map to `tonic::Status`.

pub mod config;
pub mod domain;
pub mod error;
mod events;
mod grpc;
mod orders;
mod repository;
pub mod startup;

/// The routing keys the service consumes (its queue's bindings), for the event catalog.
pub fn consumed_routing_keys() -> Vec<&'static str> {
    events::subscriptions().routing_keys()
}

pub use config::Config;
pub use error::OrderError;
pub use startup::{Application, MIGRATOR};
