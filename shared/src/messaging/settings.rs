//! How a service consumes and relays messages: the consumer's batches and retries, the
//! relay's rounds, the retention of the outbox and the inbox, the quorum queues' replicas —
//! each read through the settings table ([`crate::config::SETTINGS`]).

use std::time::Duration;

use super::RetryPolicy;
use crate::config::Source;

/// How a service consumes and relays messages. Each field names its variable; its default and
/// meaning are in the settings table ([`crate::config::SETTINGS`]); the notes here say why.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// `CONSUMER_PREFETCH`: enough to fill a few batches while one is being committed.
    pub prefetch: u16,
    /// `CONSUMER_BATCH` (at least 1).
    pub batch_size: usize,
    /// `CONSUMER_CONCURRENCY` (at least 1): each channel runs its batches one after another,
    /// which keeps the multiple-ack exact. One is enough: the batches grow with the load, and
    /// on a 2-core machine a second channel only added context switches (docs/performance.md).
    /// Scale out with replicas, or raise it for handlers that wait on slow I/O.
    pub concurrency: usize,
    /// `CONSUMER_LINGER_MS`: trades latency for fewer transactions when deliveries trickle in
    /// (docs/performance.md has what 1 ms instead of 3 bought).
    pub consumer_linger: Duration,
    /// Retry with backoff for transient handler failures (`RETRY_BASE_MS`, `RETRY_FACTOR`,
    /// `RETRY_ATTEMPTS`).
    pub retry: RetryPolicy,
    /// `OUTBOX_BATCH` (at least 1).
    pub outbox_batch: i64,
    /// `OUTBOX_POLL_MS`: also how late a scheduled message may be published.
    pub outbox_poll: Duration,
    /// `OUTBOX_MAX_ATTEMPTS` (at least 1).
    pub outbox_max_attempts: i32,
    /// `OUTBOX_CONFIRM_TIMEOUT_MS`: the round's rows are released unchanged (not the rows'
    /// fault) and published again on a new channel.
    pub outbox_confirm_timeout: Duration,
    /// `OUTBOX_RETENTION_S`.
    pub outbox_retention: Duration,
    /// `INBOX_RETENTION_S`: far longer than the longest redelivery path (a retry's backoff, a
    /// relay's republish after a crash: minutes), so every duplicate is still seen.
    pub inbox_retention: Duration,
    /// `PURGE_INTERVAL_S` ([`crate::retention`]).
    pub purge_interval: Duration,
    /// `OUTBOX_LINGER_MS` (see `consumer_linger` for what it trades).
    pub outbox_linger: Duration,
    /// `METRICS_SAMPLE_INTERVAL_MS` (at least 10 ms).
    pub metrics_interval: Duration,
    /// `RETIRED_ROUTING_KEYS` ([`crate::messaging::shapes`]). The newest shape of an event is
    /// always published.
    pub retired: super::Retired,
    /// `QUEUE_REPLICAS`: the quorum queues' initial group size. Fixed when a queue is first
    /// declared.
    pub queue_replicas: Option<u32>,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self::load(Source::Defaults).expect("the settings table's defaults parse")
    }
}

impl MessagingConfig {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::load(Source::Environment)
    }

    /// Reads the keys named on each field from `source`.
    pub fn load(source: Source) -> anyhow::Result<Self> {
        Ok(Self {
            prefetch: source.get("CONSUMER_PREFETCH")?,
            batch_size: source.get::<usize>("CONSUMER_BATCH")?.max(1),
            concurrency: source.get::<usize>("CONSUMER_CONCURRENCY")?.max(1),
            consumer_linger: source.millis("CONSUMER_LINGER_MS")?,
            retry: RetryPolicy {
                base: source.millis("RETRY_BASE_MS")?,
                factor: source.get("RETRY_FACTOR")?,
                max_attempts: source.get::<u32>("RETRY_ATTEMPTS")?.max(1),
            },
            outbox_batch: source.get::<i64>("OUTBOX_BATCH")?.max(1),
            outbox_poll: source.millis("OUTBOX_POLL_MS")?,
            outbox_max_attempts: source.get::<i32>("OUTBOX_MAX_ATTEMPTS")?.max(1),
            outbox_confirm_timeout: source
                .millis("OUTBOX_CONFIRM_TIMEOUT_MS")?
                .max(Duration::from_millis(1)),
            outbox_retention: source.secs("OUTBOX_RETENTION_S")?,
            inbox_retention: source.secs("INBOX_RETENTION_S")?,
            purge_interval: source.secs("PURGE_INTERVAL_S")?.max(Duration::from_secs(1)),
            outbox_linger: source.millis("OUTBOX_LINGER_MS")?,
            metrics_interval: source
                .millis("METRICS_SAMPLE_INTERVAL_MS")?
                .max(Duration::from_millis(10)),
            retired: super::Retired::parse(&source.var("RETIRED_ROUTING_KEYS").unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("RETIRED_ROUTING_KEYS: {e}"))?,
            queue_replicas: source
                .var("QUEUE_REPLICAS")
                .map(|raw| match raw.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err(anyhow::anyhow!(
                        "QUEUE_REPLICAS={raw:?} is not valid: a number of broker nodes, at least 1"
                    )),
                })
                .transpose()?,
        })
    }
}
