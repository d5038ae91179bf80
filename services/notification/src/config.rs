//! The notification service's settings.

use std::time::Duration;

use shop_shared::config::Source;
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
    /// Where and how notifications are emailed.
    pub email: EmailConfig,
}

/// Email delivery (docs/contract.md, "Notifications by email").
#[derive(Clone)]
pub struct EmailConfig {
    /// `SMTP_URL` (unset: notifications are RECORDED only).
    pub smtp_url: Option<String>,
    /// `SMTP_FROM`.
    pub from: String,
    /// `NOTIFY_MAX_ATTEMPTS` (1 to 100).
    pub max_attempts: i32,
    /// `NOTIFY_RETRY_BASE_MS` (at least 1 ms).
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
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl EmailConfig {
    /// Reads `SMTP_URL`, `SMTP_FROM`, `NOTIFY_MAX_ATTEMPTS`, `NOTIFY_RETRY_BASE_MS`.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the same from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        let max_attempts: i32 = source.get("NOTIFY_MAX_ATTEMPTS")?;
        anyhow::ensure!(
            (1..=100).contains(&max_attempts),
            "NOTIFY_MAX_ATTEMPTS={max_attempts} is out of range: 1 to 100"
        );
        Ok(Self {
            smtp_url: source.var("SMTP_URL"),
            from: source.get("SMTP_FROM")?,
            max_attempts,
            retry_base: source
                .millis("NOTIFY_RETRY_BASE_MS")?
                .max(Duration::from_millis(1)),
        })
    }
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the settings from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            service: ServiceConfig::load("notification", DEFAULT_PORT, DEFAULT_HTTP_PORT, source)?,
            email: EmailConfig::load(source)?,
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
