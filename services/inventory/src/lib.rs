//! The inventory service: keeps stock per product and answers each `order.created` by
//! reserving **all items or none**, in one transaction, with the database forbidding negative
//! stock (CHECK constraints) and rows locked in product order so concurrent reservations
//! cannot deadlock. `order.cancelled` releases an order's reservation, idempotently and in
//! either arrival order (a tombstone when the cancellation comes first).
//!
//! # Layout
//! - [`config`] — settings.
//! - [`startup`] — [`Application`]: build and run.
//! - `grpc` — the tonic `InventoryService` (AdjustStock, GetStock): proto ⇄ domain only.
//! - `stock` — one use-case function per RPC (staff-only AdjustStock, GetStock).
//! - [`domain`] — validated product ids and stock changes.
//! - `repository` — the SQL.
//! - `events` — the reservation and release handlers.
//! - [`error`] — [`InventoryError`] and its map to `tonic::Status`.

pub mod config;
pub mod domain;
pub mod error;
mod events;
mod grpc;
mod repository;
pub mod startup;
mod stock;

/// The routing keys the service consumes (its queue's bindings), for the event catalog.
pub fn consumed_routing_keys() -> Vec<&'static str> {
    events::subscriptions().routing_keys()
}

/// The inventory's handlers, as its consumer runs them; the saga simulation
/// (`tests/tests/saga_simulation.rs`) hands them batches of its own choosing.
pub fn subscriptions() -> shop_shared::messaging::Subscriptions {
    events::subscriptions()
}

pub use config::Config;
pub use error::InventoryError;
pub use startup::{Application, MIGRATOR};
