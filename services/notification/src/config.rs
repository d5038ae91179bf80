//! The notification service's settings.

use std::time::Duration;

use shop_shared::service::ServiceConfig;

/// The gRPC port of the contract.
pub const DEFAULT_PORT: u16 = 50054;
/// The HTTP port of the contract (metrics).
pub const DEFAULT_HTTP_PORT: u16 = 9094;
/// `SMTP_FROM`'s default.
pub const DEFAULT_FROM: &str = "shop <no-reply@shop.localhost>";
/// `NOTIFY_MAX_ATTEMPTS`' default.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 8;
/// `NOTIFY_RETRY_BASE_MS`' default.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(5);

/// Settings of the notification service.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings every service has (`NOTIFICATION_GRPC_ADDR`, `NOTIFICATION_DATABASE_URL`, …).
    pub service: ServiceConfig,
    /// Where and how notifications are emailed.
    pub email: EmailConfig,
}

/// Email delivery (docs/contract.md, "Notifications by email").
#[derive(Clone)]
pub struct EmailConfig {
    /// `SMTP_URL` (default unset: notifications are RECORDED only): `smtp://[user:pass@]host[:port]`
    /// (STARTTLS when the server offers it) or `smtps://…` (TLS from the start).
    pub smtp_url: Option<String>,
    /// `SMTP_FROM` (default `shop <no-reply@shop.localhost>`): the sender of every email.
    pub from: String,
    /// `NOTIFY_MAX_ATTEMPTS` (default 8): attempts before a notification the server keeps
    /// refusing for now (4xx) or cannot be reached for is FAILED.
    pub max_attempts: i32,
    /// `NOTIFY_RETRY_BASE_MS` (default 5000): the first retry's delay, doubled for each next
    /// one (at most 15 minutes).
    pub retry_base: Duration,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(shop_shared::diagnose::redact),
            )
            .field("from", &self.from)
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .finish()
    }
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: DEFAULT_FROM.to_owned(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_base: DEFAULT_RETRY_BASE,
        }
    }
}

impl EmailConfig {
    /// Reads `SMTP_URL`, `SMTP_FROM`, `NOTIFY_MAX_ATTEMPTS`, `NOTIFY_RETRY_BASE_MS`.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let number = |key: &str, default: u64| -> anyhow::Result<u64> {
            match var(key) {
                None => Ok(default),
                Some(raw) => raw
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{key}={raw:?} is not a whole number")),
            }
        };
        let max_attempts = number("NOTIFY_MAX_ATTEMPTS", d.max_attempts as u64)?;
        anyhow::ensure!(
            (1..=100).contains(&max_attempts),
            "NOTIFY_MAX_ATTEMPTS={max_attempts} is out of range: 1 to 100"
        );
        Ok(Self {
            smtp_url: var("SMTP_URL"),
            from: var("SMTP_FROM").unwrap_or(d.from),
            max_attempts: max_attempts as i32,
            retry_base: Duration::from_millis(
                number("NOTIFY_RETRY_BASE_MS", d.retry_base.as_millis() as u64)?.max(1),
            ),
        })
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::from_env("notification", DEFAULT_PORT, DEFAULT_HTTP_PORT)?,
            email: EmailConfig::from_env()?,
        })
    }
}
