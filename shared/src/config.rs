//! Typed settings shared by every service, read from the environment with documented defaults.
//!
//! Each key and its default is listed in docs/configuration.md's table.

use std::time::Duration;

/// Default broker URL: the local RabbitMQ of a developer machine.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Reads an environment variable, treating an empty value as unset.
pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// Reads and parses an environment variable, with a default when it is unset.
pub fn env_parse<T: std::str::FromStr>(key: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match env_var(key) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{key}={raw:?} is not valid: {e}")),
    }
}

/// Reads a `host:port` address (a name such as `localhost` is resolved), with a default.
pub fn env_addr(key: &str, default: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let Some(raw) = env_var(key) else {
        return Ok(default);
    };
    let raw = raw.trim();
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    raw.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            anyhow::anyhow!("{key}={raw:?} is not an address: write host:port, e.g. 0.0.0.0:50052")
        })
}

/// The default JWK Set URL: the user service's HTTP port on this machine.
pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:9091/.well-known/jwks.json";

/// How a service verifies access tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_JWKS_URL` (default [`DEFAULT_JWKS_URL`]): where the order, inventory and
    /// notification services fetch the public keys. The user service reads its own.
    pub jwks_url: String,
    /// `AUTH_JWKS_REFETCH_MS` (default 1000): at most one refetch per this interval for
    /// tokens with an unknown `kid`.
    pub jwks_refetch: Duration,
    /// `AUTH_JWKS_REFRESH_S` (default 300): the periodic refetch, which also drops keys the
    /// user service stopped publishing.
    pub jwks_refresh: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwks_url: DEFAULT_JWKS_URL.to_owned(),
            jwks_refetch: Duration::from_millis(1000),
            jwks_refresh: Duration::from_secs(300),
        }
    }
}

impl AuthConfig {
    /// Reads the keys documented on each field.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            jwks_url: env_var("AUTH_JWKS_URL").unwrap_or(d.jwks_url),
            jwks_refetch: Duration::from_millis(env_parse(
                "AUTH_JWKS_REFETCH_MS",
                d.jwks_refetch.as_millis() as u64,
            )?),
            jwks_refresh: Duration::from_secs(
                env_parse("AUTH_JWKS_REFRESH_S", d.jwks_refresh.as_secs())?.max(1),
            ),
        })
    }
}

/// Where the broker is and how broker names are prefixed.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `AMQP_URL`; default [`DEFAULT_AMQP_URL`].
    pub url: String,
    /// `AMQP_PREFIX`: prepended to every exchange and queue name (empty in production; tests
    /// use a random one so parallel tests never share a queue).
    pub prefix: String,
}

impl AmqpConfig {
    /// Reads `AMQP_URL` and `AMQP_PREFIX`.
    pub fn from_env() -> Self {
        Self {
            url: env_var("AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned()),
            prefix: env_var("AMQP_PREFIX").unwrap_or_default(),
        }
    }
}
