//! How a service consumes and relays messages: the consumer's batches and retries, the
//! relay's rounds, the retention of the outbox and the inbox, the quorum queues' replicas —
//! each read from the environment with its default (docs/configuration.md).

use std::time::Duration;

use super::RetryPolicy;
use crate::config::{env_parse, env_var};

/// How a service consumes and relays messages.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// `CONSUMER_PREFETCH` (default 256): unacknowledged deliveries the broker may push per
    /// consumer channel. Enough to fill a few batches while one is being committed.
    pub prefetch: u16,
    /// `CONSUMER_BATCH` (default 64): the most deliveries applied in one database transaction
    /// and acknowledged with one multiple-ack.
    pub batch_size: usize,
    /// `CONSUMER_CONCURRENCY` (default 1): consumer channels per service, each running its
    /// batches one after another (which keeps the multiple-ack exact). One is enough: the
    /// batches grow with the load, and on this benchmark's 2-core machine a second channel
    /// only added context switches (1,274 vs 1,155 orders/s, lower latency at 500/s). Scale
    /// out with replicas, or raise it for handlers that wait on slow I/O.
    pub concurrency: usize,
    /// `CONSUMER_LINGER_MS` (default 1): after the first delivery of a batch, how long the
    /// consumer waits for more before it applies what it has. Trades latency for fewer
    /// transactions when deliveries trickle in: at 500 orders/s, 1 ms instead of 3 (here
    /// and in the relay) cut the end-to-end p99 from 58 to 48 ms for 8% more CPU per order.
    pub consumer_linger: Duration,
    /// Retry with backoff for transient handler failures (`RETRY_BASE_MS` default 1000,
    /// `RETRY_FACTOR` default 5, `RETRY_ATTEMPTS` default 5).
    pub retry: RetryPolicy,
    /// `OUTBOX_BATCH` (default 1000): outbox rows claimed and published per relay round.
    pub outbox_batch: i64,
    /// `OUTBOX_POLL_MS` (default 1000): how often the relay looks for rows when nothing woke it
    /// (the service wakes it in-process after each commit that staged events; tools outside the
    /// process NOTIFY `shop_outbox`), and how late a scheduled message may be published.
    pub outbox_poll: Duration,
    /// `OUTBOX_MAX_ATTEMPTS` (default 10): failed publishes before a row is parked as dead.
    pub outbox_max_attempts: i32,
    /// `OUTBOX_CONFIRM_TIMEOUT_MS` (default 10000): how long the relay waits for the broker to
    /// confirm a round's messages before it gives up on the channel; the round's rows are
    /// released unchanged (not the rows' fault) and published again on a new channel.
    pub outbox_confirm_timeout: Duration,
    /// `OUTBOX_RETENTION_S` (default 3600): how long published rows are kept before the purge.
    pub outbox_retention: Duration,
    /// `INBOX_RETENTION_S` (default 604800, 7 days): how long the id of an applied message is
    /// kept to recognise a duplicate. Far longer than the longest redelivery path (a retry's
    /// backoff, a relay's republish after a crash: minutes), so every duplicate is still seen.
    pub inbox_retention: Duration,
    /// `PURGE_INTERVAL_S` (default 60): how often the tables that grow with traffic are purged
    /// of rows past their retention ([`crate::retention`]).
    pub purge_interval: Duration,
    /// `OUTBOX_LINGER_MS` (default 1): how long a woken relay waits for more rows to gather
    /// before it claims a round (see `consumer_linger` for what it trades).
    pub outbox_linger: Duration,
    /// `METRICS_SAMPLE_INTERVAL_MS` (default 5000): how often the gauges that need a query
    /// (outbox depth and age, inbox size, dead letters) are sampled.
    pub metrics_interval: Duration,
    /// `RETIRED_ROUTING_KEYS` (default empty): comma-separated routing keys of event shapes
    /// no longer published, e.g. `user.created` once every consumer reads `user.created.v2`
    /// ([`crate::messaging::shapes`]). The newest shape of an event is always published.
    pub retired: super::Retired,
    /// `QUEUE_REPLICAS` (default unset: RabbitMQ's default, every node of the cluster up to
    /// its limit): the quorum queues' initial group size, on how many broker nodes a service
    /// queue and its DLQ are replicated. Fixed when a queue is first declared.
    pub queue_replicas: Option<u32>,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            prefetch: 256,
            batch_size: 64,
            concurrency: 1,
            consumer_linger: Duration::from_millis(1),
            retry: RetryPolicy::default(),
            outbox_batch: 1000,
            outbox_poll: Duration::from_millis(1000),
            outbox_max_attempts: 10,
            outbox_confirm_timeout: Duration::from_millis(10_000),
            outbox_retention: Duration::from_secs(3600),
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            outbox_linger: Duration::from_millis(1),
            metrics_interval: Duration::from_millis(5000),
            retired: super::Retired::default(),
            queue_replicas: None,
        }
    }
}

impl MessagingConfig {
    /// Reads the keys documented on each field, with their defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            prefetch: env_parse("CONSUMER_PREFETCH", d.prefetch)?,
            batch_size: env_parse("CONSUMER_BATCH", d.batch_size)?.max(1),
            concurrency: env_parse("CONSUMER_CONCURRENCY", d.concurrency)?.max(1),
            consumer_linger: Duration::from_millis(env_parse(
                "CONSUMER_LINGER_MS",
                d.consumer_linger.as_millis() as u64,
            )?),
            retry: RetryPolicy {
                base: Duration::from_millis(env_parse(
                    "RETRY_BASE_MS",
                    d.retry.base.as_millis() as u64,
                )?),
                factor: env_parse("RETRY_FACTOR", d.retry.factor)?,
                max_attempts: env_parse("RETRY_ATTEMPTS", d.retry.max_attempts)?.max(1),
            },
            outbox_batch: env_parse("OUTBOX_BATCH", d.outbox_batch)?.max(1),
            outbox_poll: Duration::from_millis(env_parse(
                "OUTBOX_POLL_MS",
                d.outbox_poll.as_millis() as u64,
            )?),
            outbox_max_attempts: env_parse("OUTBOX_MAX_ATTEMPTS", d.outbox_max_attempts)?.max(1),
            outbox_confirm_timeout: Duration::from_millis(
                env_parse(
                    "OUTBOX_CONFIRM_TIMEOUT_MS",
                    d.outbox_confirm_timeout.as_millis() as u64,
                )?
                .max(1),
            ),
            outbox_retention: Duration::from_secs(env_parse(
                "OUTBOX_RETENTION_S",
                d.outbox_retention.as_secs(),
            )?),
            inbox_retention: Duration::from_secs(env_parse(
                "INBOX_RETENTION_S",
                d.inbox_retention.as_secs(),
            )?),
            purge_interval: Duration::from_secs(
                env_parse("PURGE_INTERVAL_S", d.purge_interval.as_secs())?.max(1),
            ),
            outbox_linger: Duration::from_millis(env_parse(
                "OUTBOX_LINGER_MS",
                d.outbox_linger.as_millis() as u64,
            )?),
            metrics_interval: Duration::from_millis(
                env_parse(
                    "METRICS_SAMPLE_INTERVAL_MS",
                    d.metrics_interval.as_millis() as u64,
                )?
                .max(10),
            ),
            retired: super::Retired::parse(&env_var("RETIRED_ROUTING_KEYS").unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("RETIRED_ROUTING_KEYS: {e}"))?,
            queue_replicas: env_var("QUEUE_REPLICAS")
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
