//! The messaging core against the real RabbitMQ and PostgreSQL: each test has its own
//! database and its own broker prefix.

mod helpers;

mod consumer;
mod fast_path;
mod metrics;
mod outbox;
mod pool;
mod readiness;
mod recovery;
mod shapes;
