//! shop's shared infrastructure: what every service uses the same way.
//!
//! Start with [`messaging`]: the outbox, the inbox consumer, retries and dead letters.
//!
//! # Layout
//! - [`messaging`]: RabbitMQ topology, envelopes, outbox relay, consumers, recovery.
//! - [`db`]: creating a service database, its pool and its migrations.
//! - [`config`]: typed settings from the environment.
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token.
//! - `testing` (feature `test-util`): fresh databases, broker prefixes, `eventually`.

pub mod config;
pub mod db;
pub mod messaging;
pub mod shutdown;
#[cfg(feature = "test-util")]
pub mod testing;
