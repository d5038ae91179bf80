//! The `shop` command's library: running the whole system in one process, for `shop up`, for
//! the benchmark and for the system tests.
//!
//! # Layout
//! - [`system`] — the four services started together, and stopped together.
//! - [`bench`] — `shop bench`: load, limits, consistency.
//! - [`catalog`] — `shop catalog`: the AsyncAPI document of the events.

pub mod bench;
pub mod catalog;
pub mod keys;
pub mod system;
