//! The user service's settings.

use shop_shared::config::env_parse;
use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50051;

/// Settings of the user service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`USER_GRPC_ADDR`, `USER_DATABASE_URL`, …).
    pub service: ServiceConfig,
    /// The argon2id cost.
    pub password: PasswordHashing,
}

/// argon2id parameters (OWASP's recommended minimum by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashing {
    /// `PASSWORD_HASH_MEMORY_KIB` (default 19456 = 19 MiB).
    pub memory_kib: u32,
    /// `PASSWORD_HASH_ITERATIONS` (default 2).
    pub iterations: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
        }
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = PasswordHashing::default();
        Ok(Self {
            service: ServiceConfig::from_env("user", DEFAULT_PORT)?,
            password: PasswordHashing {
                memory_kib: env_parse("PASSWORD_HASH_MEMORY_KIB", d.memory_kib)?,
                iterations: env_parse("PASSWORD_HASH_ITERATIONS", d.iterations)?,
            },
        })
    }
}
