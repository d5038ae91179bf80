//! shop's shared infrastructure: what every service uses the same way.
//!
//! Start with [`messaging`]: the outbox, the inbox consumer, retries and dead letters.
//!
//! # Layout
//! - [`messaging`] — RabbitMQ topology, envelopes, outbox relay, consumers, recovery.
//! - [`auth`] — ES256 access tokens, the JWK Set, the verifier and the server layer.
//! - [`ids`] — `OrderId`, `CustomerId`, `UserId`, `NotificationId`: one type per id.
//! - [`http`] — the HTTP port beside gRPC (JWKS, metrics).
//! - [`input`] — the checks every request string gets (no NUL; no control characters in ids).
//! - [`metrics`] — the Prometheus metrics every service serves on its HTTP port.
//! - [`db`] — creating a service database, its pool and its migrations.
//! - [`diagnose`] — start-up errors that say what is wrong and which setting to change.
//! - [`config`] — typed settings from the environment.
//! - [`error`] — the failures every RPC shares: database unavailable, unexpected.
//! - [`grpc`] — health, reflection, the server builder, correlation ids.
//! - [`grpc_drain`] — open gRPC streams ended when the shutdown's drain period is over.
//! - [`readiness`] — `GET /ready`: can the service use its database and broker now?
//! - [`retention`] — scheduled purges of the tables that grow with traffic.
//! - [`service`] — a service's life: database, broker check, serve, ordered shutdown.
//! - [`shutdown`] — SIGINT/SIGTERM as a cancellation token.
//! - [`telemetry`] — logs and traces.
//! - [`time`] — the clock at database precision, protobuf timestamps.
//! - `testing` (feature `test-util`): fresh databases, broker prefixes, `eventually`.

pub mod auth;
pub mod config;
pub mod db;
pub mod diagnose;
pub mod error;
pub mod grpc;
pub mod grpc_drain;
pub mod http;
pub mod ids;
pub mod input;
pub mod messaging;
pub mod metrics;
pub mod readiness;
pub mod retention;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod time;
