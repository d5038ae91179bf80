//! The order service's settings.

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
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("order", DEFAULT_PORT, DEFAULT_HTTP_PORT)?,
        })
    }
}
