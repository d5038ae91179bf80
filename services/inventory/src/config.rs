//! The inventory service's settings.

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
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let service = ServiceConfig::from_env("inventory", DEFAULT_PORT, DEFAULT_HTTP_PORT)?;
        Ok(Self { service })
    }
}
