//! Test helpers (feature `test-util`): a fresh database per test, a random broker prefix per
//! test, a probe queue that reads events off the exchange, and `eventually` for asynchronous
//! outcomes. Everything a test creates is removed when its guard drops.
//!
//! # Layout
//! - `database` — [`TestDatabase`]: a database of its own, migrated, dropped afterwards.
//! - `broker` — [`TestBroker`]: a prefix of its own; [`publish`], [`place_dead_letter`].
//! - `probe` — [`EventProbe`]: read what was published.
//! - `service` — [`TestEnv`], [`service_config`], [`free_port`], [`grpc_channel`].
//! - `auth` — [`TestIssuer`], [`refused_authorizations`].
//! - `metrics` — [`metric`], [`scrape`], [`http_get`].
//! - this file — [`eventually`] and [`init_logs`], which every test uses.

mod auth;
mod broker;
mod database;
mod metrics;
mod probe;
mod service;

use std::future::Future;
use std::time::{Duration, Instant};

pub use auth::{TestIssuer, refused_authorizations, with_authorization};
pub use broker::{
    TestBroker, amqp_url, place_dead_letter, place_in_queue, publish, publish_envelope,
};
pub use database::{TestDatabase, database_server_url, with_database};
pub use metrics::{Series, http_get, metric, parse_metrics, scrape};
pub use probe::{EventProbe, Received};
pub use service::{
    RunningUntilDropped, SpawnedService, TestEnv, authorized, bearer, free_port, grpc_channel,
    run_until_dropped, service_config, spawn_service,
};

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// Installs a log subscriber once per test binary: silent unless `TEST_LOG` is set (then
/// `RUST_LOG` or `info`, to stderr). Trace context still propagates (W3C propagator).
pub fn init_logs() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(
            crate::telemetry::w3c::LenientTraceContextPropagator::new(),
        );
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}
