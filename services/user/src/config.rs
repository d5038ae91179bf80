//! The user service's settings.

use std::time::Duration;

use secrecy::SecretString;
use shop_shared::config::Source;
use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50051;
/// The HTTP port of the contract (the JWK Set).
pub const DEFAULT_HTTP_PORT: u16 = 9091;

/// Settings of the user service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`USER_GRPC_ADDR`, `USER_DATABASE_URL`, …).
    pub service: ServiceConfig,
    /// The argon2id cost.
    pub password: PasswordHashing,
    /// How many password checks may run and wait at once.
    pub password_checks: PasswordCheckLimits,
    /// Tokens, login throttling and the staff account.
    pub auth: UserAuthConfig,
}

/// argon2id parameters (OWASP's recommended minimum by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashing {
    /// `PASSWORD_HASH_MEMORY_KIB`.
    pub memory_kib: u32,
    /// `PASSWORD_HASH_ITERATIONS`.
    pub iterations: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl PasswordHashing {
    fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            memory_kib: source.get("PASSWORD_HASH_MEMORY_KIB")?,
            iterations: source.get("PASSWORD_HASH_ITERATIONS")?,
        })
    }
}

/// The bound on password checks (docs/contract.md, "Bounds"): each needs
/// [`PasswordHashing::memory_kib`] of memory while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCheckLimits {
    /// `PASSWORD_HASH_CONCURRENCY` (at least 1).
    pub concurrency: usize,
    /// `PASSWORD_HASH_QUEUE`.
    pub queue: usize,
}

impl Default for PasswordCheckLimits {
    fn default() -> Self {
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl PasswordCheckLimits {
    fn load(source: Source) -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            concurrency: source
                .get_or::<usize>("PASSWORD_HASH_CONCURRENCY", cpus)?
                .max(1),
            queue: source.get("PASSWORD_HASH_QUEUE")?,
        })
    }
}

/// How the user service issues tokens (docs/contract.md, "Authentication and authorization").
#[derive(Debug, Clone)]
pub struct UserAuthConfig {
    /// `AUTH_TOKEN_TTL_S` (at least a second).
    pub token_ttl: Duration,
    /// `LOGIN_MAX_FAILURES` (at least 1).
    pub login_max_failures: u32,
    /// `LOGIN_WINDOW_S`.
    pub login_window: Duration,
    /// `SHOP_ADMIN_EMAIL` and `SHOP_ADMIN_PASSWORD`: the staff account made sure of at start.
    pub admin: Option<AdminAccount>,
}

impl Default for UserAuthConfig {
    fn default() -> Self {
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl UserAuthConfig {
    fn load(source: Source) -> anyhow::Result<Self> {
        let admin = match (
            source.var("SHOP_ADMIN_EMAIL"),
            source.var("SHOP_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(password)) => Some(AdminAccount {
                email,
                password: SecretString::from(password),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                "set both SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD (the staff account), or neither"
            ),
        };
        Ok(Self {
            token_ttl: source.secs("AUTH_TOKEN_TTL_S")?.max(Duration::from_secs(1)),
            login_max_failures: source.get::<u32>("LOGIN_MAX_FAILURES")?.max(1),
            login_window: source.secs("LOGIN_WINDOW_S")?,
            admin,
        })
    }
}

/// The staff account of `SHOP_ADMIN_EMAIL` / `SHOP_ADMIN_PASSWORD`.
#[derive(Debug, Clone)]
pub struct AdminAccount {
    /// Its email address.
    pub email: String,
    /// Its password (never logged).
    pub password: SecretString,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the settings from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::load("user", DEFAULT_PORT, DEFAULT_HTTP_PORT, source)?,
            password: PasswordHashing::load(source)?,
            password_checks: PasswordCheckLimits::load(source)?,
            auth: UserAuthConfig::load(source)?,
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
