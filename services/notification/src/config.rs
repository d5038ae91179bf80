//! The notification service's settings.

use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50054;
/// The HTTP port of the contract (metrics).
pub const DEFAULT_HTTP_PORT: u16 = 9094;

/// Settings of the notification service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`NOTIFICATION_GRPC_ADDR`, `NOTIFICATION_DATABASE_URL`, …).
    pub service: ServiceConfig,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("notification", DEFAULT_PORT, DEFAULT_HTTP_PORT)?,
        })
    }
}
