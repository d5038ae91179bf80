//! The inventory service's settings.

use shop_shared::config::env_parse;
use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50053;

/// Settings of the inventory service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`INVENTORY_GRPC_ADDR`, `INVENTORY_DATABASE_URL`, …).
    pub service: ServiceConfig,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut service = ServiceConfig::from_env("inventory", DEFAULT_PORT)?;
        // One consumer channel by default (`INVENTORY_CONSUMER_CONCURRENCY`): a batch of
        // reservations shares one transaction, and two batches running side by side could
        // lock the same products in different orders (each message locks in product order,
        // a batch does not). Serial batches never wait on each other.
        service.messaging.concurrency = env_parse("INVENTORY_CONSUMER_CONCURRENCY", 1usize)?.max(1);
        Ok(Self { service })
    }
}
