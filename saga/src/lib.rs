//! The saga's decisions as pure functions: state + message → new state + what to publish.
//!
//! No I/O lives here. Each service loads the rows a decision needs, calls the function, and
//! writes what it returns; the model check (`tests/model_check.rs`) calls the very same
//! functions on an in-memory copy of the databases and explores every arrival order,
//! duplicate, batch boundary and crash point. What is decided here is therefore what is
//! proven there (docs/saga-check.md).
//!
//! # Layout
//! - [`inventory`] — reserve every item of an order or none; release on cancellation, in
//!   either arrival order (a tombstone when the cancellation comes first).
//! - [`order`] — an order's status and its transitions (confirm, reject, cancel).
//! - [`stored`] (feature `sqlx`) — the statuses as the text columns that store them.
//! - [`contact`] — a user's contact data kept from `user.created` / `user.updated`, newest
//!   field wins whatever the arrival order.

pub mod contact;
pub mod inventory;
pub mod order;
#[cfg(feature = "sqlx")]
pub mod stored;
