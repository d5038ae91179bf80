//! The user service's settings.

use std::time::Duration;

use secrecy::SecretString;
use shop_shared::config::{env_parse, env_var};
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

/// The bound on password checks (docs/contract.md, "Bounds"): each needs
/// [`PasswordHashing::memory_kib`] of memory while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCheckLimits {
    /// `PASSWORD_HASH_CONCURRENCY` (default: the number of CPUs): checks running at once.
    pub concurrency: usize,
    /// `PASSWORD_HASH_QUEUE` (default 32): calls waiting for a running slot; beyond them a
    /// call is answered RESOURCE_EXHAUSTED at once.
    pub queue: usize,
}

impl Default for PasswordCheckLimits {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            queue: 32,
        }
    }
}

/// How the user service issues tokens (docs/contract.md, "Authentication and authorization").
#[derive(Debug, Clone)]
pub struct UserAuthConfig {
    /// `AUTH_TOKEN_TTL_S` (default 900): how long an access token is valid.
    pub token_ttl: Duration,
    /// `LOGIN_MAX_FAILURES` (default 5): failed logins for one email within the window
    /// after which Login answers RESOURCE_EXHAUSTED.
    pub login_max_failures: u32,
    /// `LOGIN_WINDOW_S` (default 300): the throttling window.
    pub login_window: Duration,
    /// `SHOP_ADMIN_EMAIL` and `SHOP_ADMIN_PASSWORD`: the staff account made sure of at start.
    pub admin: Option<AdminAccount>,
}

impl Default for UserAuthConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(900),
            login_max_failures: 5,
            login_window: Duration::from_secs(300),
            admin: None,
        }
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
        let d = PasswordHashing::default();
        let a = UserAuthConfig::default();
        let limits = PasswordCheckLimits::default();
        let admin = match (env_var("SHOP_ADMIN_EMAIL"), env_var("SHOP_ADMIN_PASSWORD")) {
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
            service: ServiceConfig::from_env("user", DEFAULT_PORT, DEFAULT_HTTP_PORT)?,
            password: PasswordHashing {
                memory_kib: env_parse("PASSWORD_HASH_MEMORY_KIB", d.memory_kib)?,
                iterations: env_parse("PASSWORD_HASH_ITERATIONS", d.iterations)?,
            },
            password_checks: PasswordCheckLimits {
                concurrency: env_parse("PASSWORD_HASH_CONCURRENCY", limits.concurrency)?.max(1),
                queue: env_parse("PASSWORD_HASH_QUEUE", limits.queue)?,
            },
            auth: UserAuthConfig {
                token_ttl: Duration::from_secs(
                    env_parse("AUTH_TOKEN_TTL_S", a.token_ttl.as_secs())?.max(1),
                ),
                login_max_failures: env_parse("LOGIN_MAX_FAILURES", a.login_max_failures)?.max(1),
                login_window: Duration::from_secs(env_parse(
                    "LOGIN_WINDOW_S",
                    a.login_window.as_secs(),
                )?),
                admin,
            },
        })
    }
}
