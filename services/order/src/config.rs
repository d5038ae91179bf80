//! The order service's settings.

use std::time::Duration;

use shop_shared::config::env_parse;
use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50052;
/// The HTTP port of the contract (metrics).
pub const DEFAULT_HTTP_PORT: u16 = 9092;

/// Settings of the order service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`ORDER_GRPC_ADDR`, `ORDER_DATABASE_URL`, …).
    pub service: ServiceConfig,
    /// `ORDER_RESERVATION_TIMEOUT_S` (default 300): how long an order may stay PENDING waiting
    /// for the inventory before it is cancelled ("the inventory did not answer within 300 s").
    pub reservation_timeout: Duration,
}

/// The default of [`Config::reservation_timeout`].
pub const DEFAULT_RESERVATION_TIMEOUT: Duration = Duration::from_secs(300);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let timeout = env_parse(
            "ORDER_RESERVATION_TIMEOUT_S",
            DEFAULT_RESERVATION_TIMEOUT.as_secs(),
        )?;
        anyhow::ensure!(
            timeout > 0,
            "ORDER_RESERVATION_TIMEOUT_S must be at least 1 (seconds)"
        );
        Ok(Self {
            service: ServiceConfig::from_env("order", DEFAULT_PORT, DEFAULT_HTTP_PORT)?,
            reservation_timeout: Duration::from_secs(timeout),
        })
    }
}
