//! Logging and tracing setup shared by every binary: one call, one guard.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Flushes telemetry when dropped (at the end of `main`).
#[derive(Debug)]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber for `service`: `RUST_LOG` filter (default `info`), pretty
/// logs, or JSON with `LOG_FORMAT=json`.
pub fn init(service: &str) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = crate::config::env_var("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .try_init()?;
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()?;
    }
    tracing::debug!(service, "telemetry initialised");
    Ok(TelemetryGuard { _private: () })
}
