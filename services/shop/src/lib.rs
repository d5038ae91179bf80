//! The `shop` command's library: running the whole system in one process (for `shop up`, the
//! benchmark and the system tests), and every command.
//!
//! # Layout
//! - [`cmd`] — the commands, one module each (`shop dlq` → [`cmd::dlq`], …), and the
//!   [`cmd::Command`] that `main.rs` parses and dispatches.
//! - [`system`] — the four services started together, and stopped together.
//! - [`settings`] — the environment variables (docs/configuration.md), for `--help`.

// The benchmark's JSON report is one `json!` object with many keys.
#![recursion_limit = "256"]

pub mod cmd;
pub mod settings;
pub mod system;
