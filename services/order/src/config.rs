//! The order service's settings.

use std::time::Duration;

use shop_shared::config::Source;
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
    /// `ORDER_RESERVATION_TIMEOUT_S` (at least a second).
    pub reservation_timeout: Duration,
}

/// The default of [`Config::reservation_timeout`] (the settings table's).
pub fn default_reservation_timeout() -> Duration {
    reservation_timeout(Source::Defaults).expect("the settings table's default is valid")
}

fn reservation_timeout(source: Source) -> anyhow::Result<Duration> {
    let timeout = source.secs("ORDER_RESERVATION_TIMEOUT_S")?;
    anyhow::ensure!(
        !timeout.is_zero(),
        "ORDER_RESERVATION_TIMEOUT_S must be at least 1 (seconds)"
    );
    Ok(timeout)
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the settings from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::load("order", DEFAULT_PORT, DEFAULT_HTTP_PORT, source)?,
            reservation_timeout: reservation_timeout(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_setting_loads_from_the_table_s_defaults() {
        super::Config::load(shop_shared::config::Source::Defaults).unwrap();
    }
}
