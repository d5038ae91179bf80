//! The user service: registers users, logs them in (ES256 access tokens, signing keys in its
//! database, the JWK Set on its HTTP port) and changes their profile, publishing
//! `user.created` and `user.updated` through the outbox. Passwords are hashed with argon2id
//! and never leave the service: not in a response, an event or a log line.
//!
//! # Layout
//! - [`config`] — settings (the shared ones plus the password hashing cost).
//! - [`startup`] — [`Application`]: build (database, broker, listener) and run.
//! - `grpc`: the tonic `UserService`: proto → domain → proto, nothing else.
//! - `users`: one use-case function per RPC (authorize, validate, write, stage), and the
//!   staff account.
//! - [`keys`] — the signing keys: creation, rotation, the published JWK Set.
//! - `http`: the HTTP port (the JWK Set).
//! - [`domain`] — validated input (`Email`, `UserName`, `Password`).
//! - `password_checks`: the bound on password checks running and waiting at once.
//! - `repository`: the SQL.
//! - `events`: the events the service publishes.
//! - [`error`] — [`UserError`] and its one map to `tonic::Status`.

pub mod config;
pub mod domain;
pub mod error;
mod events;
mod grpc;
mod http;
pub mod keys;
mod password_checks;
mod repository;
pub mod startup;
mod users;

pub use config::Config;
pub use error::UserError;
pub use startup::{Application, MIGRATOR};
