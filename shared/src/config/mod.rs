//! Typed settings shared by every service, read from the environment with documented defaults.
//!
//! Every variable is a row of [`SETTINGS`] (its name, default and meaning, once). Settings
//! are read through a [`Source`]: the environment, where an unset variable takes the table's
//! default, or the table's defaults alone (what each settings struct's `Default` is).
//! `shop up --help` prints the table and docs/configuration.md shows it
//! ([`markdown_table`]).

use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

mod table;

pub use table::{Fallback, SETTINGS, Setting};

/// Default broker URL: the local RabbitMQ of a developer machine.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The services whose own variables the table writes as `<SERVICE>_…`.
const SERVICES: [&str; 4] = ["USER", "ORDER", "INVENTORY", "NOTIFICATION"];

/// Reads an environment variable, treating an empty value as unset. For variables outside
/// [`SETTINGS`] (a test's `TEST_DATABASE_URL`); a setting is read through a [`Source`].
pub fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The row of `key` (a service's own `ORDER_DATABASE_URL` is the `<SERVICE>_DATABASE_URL`
/// row). A key outside the table is a mistake in the code that reads it, caught by the tests
/// that load every settings struct from [`Source::Defaults`].
pub fn setting(key: &str) -> &'static Setting {
    let own = |key: &str| {
        let (service, rest) = key.split_once('_')?;
        SERVICES.contains(&service).then_some(())?;
        SETTINGS
            .iter()
            .find(|s| s.key.strip_prefix("<SERVICE>_") == Some(rest))
    };
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .or_else(|| own(key))
        .unwrap_or_else(|| panic!("{key} is not in shop_shared::config::SETTINGS: add its row"))
}

/// Where settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The process's environment; an unset (or blank) variable takes the table's default.
    Environment,
    /// The table's defaults alone (a settings struct's `Default`).
    Defaults,
}

impl Source {
    /// The variable's text when it is set here.
    pub fn var(self, key: &str) -> Option<String> {
        setting(key);
        match self {
            Self::Environment => env_var(key),
            Self::Defaults => None,
        }
    }

    /// The setting: the variable parsed, or the table's default value.
    pub fn get<T: FromStr>(self, key: &str) -> anyhow::Result<T>
    where
        T::Err: Display,
    {
        match (self.var(key), setting(key).default) {
            (Some(raw), _) => parse(key, &raw),
            (None, Fallback::Value(default)) => parse(key, default),
            (None, Fallback::Unset(_) | Fallback::Computed(_)) => {
                anyhow::bail!("{key} has no default value in the settings table")
            }
        }
    }

    /// A setting whose default the code works out (the table says how): the variable parsed,
    /// or `default`.
    pub fn get_or<T: FromStr>(self, key: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: Display,
    {
        self.var(key).map_or(Ok(default), |raw| parse(key, &raw))
    }

    /// A setting that is off when unset: the variable parsed, or `None`.
    pub fn optional<T: FromStr>(self, key: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: Display,
    {
        self.var(key).map(|raw| parse(key, &raw)).transpose()
    }

    /// A number of milliseconds.
    pub fn millis(self, key: &str) -> anyhow::Result<Duration> {
        self.get(key).map(Duration::from_millis)
    }

    /// A number of seconds.
    pub fn secs(self, key: &str) -> anyhow::Result<Duration> {
        self.get(key).map(Duration::from_secs)
    }

    /// A `host:port` address (a name such as `localhost` is resolved), or `default`.
    pub fn addr(self, key: &str, default: SocketAddr) -> anyhow::Result<SocketAddr> {
        use std::net::ToSocketAddrs as _;
        let Some(raw) = self.var(key) else {
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
                anyhow::anyhow!(
                    "{key}={raw:?} is not an address: write host:port, e.g. 0.0.0.0:50052"
                )
            })
    }
}

fn parse<T: FromStr>(key: &str, raw: &str) -> anyhow::Result<T>
where
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{key}={raw:?} is not valid: {e}"))
}

/// [`SETTINGS`] as the markdown table of docs/configuration.md.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        let default = match s.default {
            Fallback::Value(v) if v.parse::<f64>().is_ok() => shown_number(s.key, v),
            Fallback::Value(v) => format!("`{v}`"),
            Fallback::Unset(text) | Fallback::Computed(text) => text.to_owned(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", s.key, s.meaning));
    }
    out
}

/// A number, with the days it makes when it is a long count of seconds.
fn shown_number(key: &str, value: &str) -> String {
    match value.parse::<u64>() {
        Ok(secs) if key.ends_with("_S") && secs >= 86_400 && secs % 86_400 == 0 => {
            let days = secs / 86_400;
            format!("{value} ({days} days)")
        }
        _ => value.to_owned(),
    }
}

/// The default JWK Set URL: the user service's HTTP port on this machine.
pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:9091/.well-known/jwks.json";

/// How a service verifies access tokens.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `AUTH_JWKS_URL`. The user service reads its own.
    pub jwks_url: String,
    /// `AUTH_JWKS_REFETCH_MS`.
    pub jwks_refetch: Duration,
    /// `AUTH_JWKS_REFRESH_S` (at least a second).
    pub jwks_refresh: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl AuthConfig {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the keys named on each field from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            jwks_url: source.get("AUTH_JWKS_URL")?,
            jwks_refetch: source.millis("AUTH_JWKS_REFETCH_MS")?,
            jwks_refresh: source
                .secs("AUTH_JWKS_REFRESH_S")?
                .max(Duration::from_secs(1)),
        })
    }
}

/// Where the broker is and how broker names are prefixed.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `AMQP_URL`.
    pub url: String,
    /// `AMQP_PREFIX` (tests use a random one so parallel tests never share a queue).
    pub prefix: String,
}

impl AmqpConfig {
    /// Reads `AMQP_URL` and `AMQP_PREFIX` from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads `AMQP_URL` and `AMQP_PREFIX` from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            url: source.get("AMQP_URL")?,
            prefix: source.var("AMQP_PREFIX").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_the_defaults_the_code_names() {
        assert_eq!(
            setting("AMQP_URL").default,
            Fallback::Value(DEFAULT_AMQP_URL)
        );
        assert_eq!(
            setting("AUTH_JWKS_URL").default,
            Fallback::Value(DEFAULT_JWKS_URL)
        );
        assert_eq!(setting("ORDER_DATABASE_URL").key, "<SERVICE>_DATABASE_URL");
        assert_eq!(
            setting("ORDER_RESERVATION_TIMEOUT_S").key,
            "ORDER_RESERVATION_TIMEOUT_S"
        );
        let keys: std::collections::HashSet<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(keys.len(), SETTINGS.len(), "a key is in the table twice");
    }

    #[test]
    fn the_shared_settings_load_from_the_defaults_alone() {
        AuthConfig::load(Source::Defaults).unwrap();
        AmqpConfig::load(Source::Defaults).unwrap();
        crate::messaging::MessagingConfig::load(Source::Defaults).unwrap();
    }

    #[test]
    #[should_panic(expected = "NOT_A_SETTING is not in shop_shared::config::SETTINGS")]
    fn a_key_outside_the_table_is_refused() {
        let _ = Source::Defaults.var("NOT_A_SETTING");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = parse::<u64>("OUTBOX_BATCH", "many")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("OUTBOX_BATCH=\"many\" is not valid"), "{e}");
    }

    /// docs/configuration.md shows the table as rendered here; `UPDATE_DOCS=1 cargo test -p
    /// shop-shared --lib config` rewrites the page's table.
    #[test]
    fn docs_configuration_md_shows_this_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let page = std::fs::read_to_string(path).unwrap();
        let start = page
            .find("| key | default | meaning |")
            .expect("the page has the table");
        let end = page[start..]
            .find("\n\n")
            .map_or(page.len(), |n| start + n + 1);
        let table = markdown_table();
        if page[start..end] != table {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let updated = format!("{}{table}{}", &page[..start], &page[end..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!(
                    "docs/configuration.md's table is not shop_shared::config::SETTINGS: run \
                     UPDATE_DOCS=1 cargo test -p shop-shared --lib config"
                );
            }
        }
    }
}
