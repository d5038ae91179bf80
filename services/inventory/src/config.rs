//! The inventory service's settings.

use std::time::Duration;

use shop_shared::config::Source;
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
    /// `RESERVATION_RETENTION_S`: RESERVED records hold units and CANCELLED ones (a
    /// cancellation that came first) keep a late `order.created` from reserving: those are
    /// kept whatever their age.
    pub reservation_retention: Duration,
}

/// The default of [`Config::reservation_retention`] (the settings table's).
pub fn default_reservation_retention() -> Duration {
    Source::Defaults
        .secs("RESERVATION_RETENTION_S")
        .expect("the settings table's default is valid")
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the settings from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::load("inventory", DEFAULT_PORT, DEFAULT_HTTP_PORT, source)?,
            reservation_retention: source.secs("RESERVATION_RETENTION_S")?,
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
