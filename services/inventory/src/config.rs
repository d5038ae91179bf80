//! The inventory service's settings.

use std::time::Duration;

use shop_shared::config::env_parse;
use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50053;
/// The HTTP port of the contract (metrics).
pub const DEFAULT_HTTP_PORT: u16 = 9093;

/// Settings of the inventory service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`INVENTORY_GRPC_ADDR`, `INVENTORY_DATABASE_URL`, …).
    pub service: ServiceConfig,
    /// `RESERVATION_RETENTION_S` (default 2592000, 30 days): how long a settled reservation
    /// record (FAILED, RELEASED) is kept before the scheduled purge. RESERVED records hold
    /// units and CANCELLED ones (a cancellation that came first) keep a late `order.created`
    /// from reserving: those are kept.
    pub reservation_retention: Duration,
}

/// The default of [`Config::reservation_retention`].
pub const DEFAULT_RESERVATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let service = ServiceConfig::from_env("inventory", DEFAULT_PORT, DEFAULT_HTTP_PORT)?;
        let reservation_retention = Duration::from_secs(env_parse(
            "RESERVATION_RETENTION_S",
            DEFAULT_RESERVATION_RETENTION.as_secs(),
        )?);
        Ok(Self {
            service,
            reservation_retention,
        })
    }
}
