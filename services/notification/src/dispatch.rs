//! The dispatcher: emails the PENDING notifications after the transactions that recorded them
//! committed (docs/contract.md, "Notifications by email").
//!
//! It wakes on the `NOTIFY` a recording transaction sends at its commit, and polls as a
//! fallback. Each round claims a few due notifications for a lease (`SKIP LOCKED`: replicas
//! never take the same one; the claim commits at once, so no transaction stays open while the
//! mail server answers), sends them, and records each outcome: SENT with its time; a 4xx refusal
//! or an unreachable server retried with backoff (doubling from `NOTIFY_RETRY_BASE_MS`) up to
//! `NOTIFY_MAX_ATTEMPTS`; a 5xx refusal or the last attempt FAILED with the server's answer. A
//! dispatcher that dies between the server's acceptance and the record leaves the notification
//! to be sent again when its lease ends, with the same `Message-ID`: handed to the server at
//! least once, twice only after such a crash.

use std::time::Duration;

use futures::StreamExt as _;
use shop_shared::metrics::Metrics;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::config::EmailConfig;
use crate::email::{Email, Mailer, SendError};
use crate::record::NOTIFY_CHANNEL;
use crate::repository::{self, Claimed};

/// Counter: delivery attempts by channel and outcome (`sent`, `retried`, `failed`).
pub const SENT_TOTAL: &str = "shop_notifications_sent_total";
/// Gauge: notifications recorded and not yet sent.
pub const PENDING: &str = "shop_notifications_pending";

/// Notifications claimed per round.
const BATCH: i64 = 32;
/// Emails handed to the server at the same time.
const IN_FLIGHT: usize = 8;
/// How long a claimed notification is left alone: far longer than an attempt can take (each
/// SMTP command has 10 s), so only a dispatcher that died leaves one to the next.
const LEASE: Duration = Duration::from_secs(300);
/// The longest wait between two rounds when nothing wakes the dispatcher.
const POLL: Duration = Duration::from_secs(1);
/// The longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// The channel every notification goes through.
const CHANNEL: &str = "email";

/// How one attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    Retried,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        }
    }
}

/// The delay before attempt `failed + 1`, after `failed` failed ones: `base`, doubled each time,
/// at most 15 minutes.
pub fn backoff(base: Duration, failed: i32) -> Duration {
    let factor = 2u32.saturating_pow(u32::try_from(failed.max(1) - 1).unwrap_or(0));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// What becomes of a notification after an attempt that ended with `result`, `failed` attempts
/// having failed before it: its outcome, the error to record, and when to try again.
fn decide(
    result: &Result<(), SendError>,
    failed: i32,
    config: &EmailConfig,
) -> (Outcome, Option<String>, Option<Duration>) {
    match result {
        Ok(()) => (Outcome::Sent, None, None),
        Err(SendError::Permanent(e)) => (Outcome::Failed, Some(e.clone()), None),
        Err(SendError::Transient(e)) if failed + 1 >= config.max_attempts => (
            Outcome::Failed,
            Some(format!(
                "{e} (attempt {} of {}, the last)",
                failed + 1,
                config.max_attempts
            )),
            None,
        ),
        Err(SendError::Transient(e)) => (
            Outcome::Retried,
            Some(e.clone()),
            Some(backoff(config.retry_base, failed + 1)),
        ),
    }
}

/// Sends a service's pending notifications; see the module docs.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: PgPool,
    mailer: Mailer,
    config: EmailConfig,
    metrics: Metrics,
    /// How often the pending gauge is sampled.
    sample_every: Duration,
}

impl Dispatcher {
    /// A dispatcher of the notifications in `pool`, through `mailer`.
    pub fn new(
        pool: PgPool,
        mailer: Mailer,
        config: EmailConfig,
        metrics: Metrics,
        sample_every: Duration,
    ) -> Self {
        Self {
            pool,
            mailer,
            config,
            metrics,
            sample_every,
        }
    }

    /// Shows the instruments before anything is counted: each outcome at 0, nothing pending.
    pub fn zero(metrics: &Metrics) {
        for outcome in [Outcome::Sent, Outcome::Retried, Outcome::Failed] {
            metrics.count_labelled(
                SENT_TOTAL,
                &[("channel", CHANNEL), ("outcome", outcome.label())],
                0,
            );
        }
        metrics.set_gauge(PENDING, 0.0);
    }

    /// Sends until `shutdown` (the round in progress finishes first).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(smtp = %self.mailer.url(), "notifications are emailed");
        let mut listener: Option<PgListener> = None;
        let mut sampled_at: Option<tokio::time::Instant> = None;
        loop {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let claimed = match self.round().await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "notification round failed; trying again");
                    0
                }
            };
            if sampled_at.is_none_or(|at| at.elapsed() >= self.sample_every) {
                self.sample().await;
                sampled_at = Some(tokio::time::Instant::now());
            }
            if shutdown.is_cancelled() {
                return;
            }
            if claimed as i64 >= BATCH {
                continue;
            }
            let wait = self.until_next_due().await;
            tokio::select! {
                woken = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = woken {
                        tracing::debug!(error = %e, "notification listener interrupted");
                        listener = None;
                    }
                }
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(NOTIFY_CHANNEL).await.ok()?;
        Some(listener)
    }

    /// How long until the next pending notification is due (at most [`POLL`]).
    async fn until_next_due(&self) -> Duration {
        let Ok(mut conn) = self.pool.acquire().await else {
            return POLL;
        };
        match repository::next_due(&mut conn).await {
            Ok(Some(due)) => (due - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(POLL),
            _ => POLL,
        }
    }

    async fn sample(&self) {
        let Ok(mut conn) = self.pool.acquire().await else {
            return;
        };
        if let Ok(pending) = repository::count_pending(&mut conn).await {
            self.metrics.set_gauge(PENDING, pending as f64);
        }
    }

    /// Claims due notifications, sends them (a few at a time) and records each outcome.
    /// Returns how many it claimed.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let claimed = {
            let mut conn = self.pool.acquire().await?;
            repository::claim_pending(&mut conn, BATCH, LEASE).await?
        };
        let count = claimed.len();
        let results: Vec<Result<(), sqlx::Error>> = futures::stream::iter(claimed)
            .map(|n| self.deliver(n))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(count)
    }

    /// One attempt at one notification, and its record.
    async fn deliver(&self, n: Claimed) -> Result<(), sqlx::Error> {
        let email = Email {
            notification_id: n.notification_id,
            to: &n.recipient,
            subject: &n.subject,
            text: &n.body,
            html: &n.html_body,
        };
        let result = self.mailer.send(&email).await;
        let (outcome, error, retry_in) = decide(&result, n.attempts, &self.config);
        let mut conn = self.pool.acquire().await?;
        match &error {
            None => {
                repository::mark_sent(&mut conn, n.notification_id, shop_shared::time::now())
                    .await?
            }
            Some(error) => {
                repository::mark_failed_attempt(&mut conn, n.notification_id, error, retry_in)
                    .await?;
            }
        }
        match (outcome, &error) {
            (Outcome::Sent, _) => {
                tracing::info!(notification_id = %n.notification_id, attempt = n.attempts + 1, "notification sent")
            }
            (Outcome::Retried, Some(e)) => {
                tracing::warn!(notification_id = %n.notification_id, attempt = n.attempts + 1, retry_in_s = retry_in.unwrap_or_default().as_secs_f64(), error = %e, "notification not taken; retrying")
            }
            (_, e) => {
                tracing::warn!(notification_id = %n.notification_id, attempt = n.attempts + 1, error = e.as_deref().unwrap_or(""), "notification failed")
            }
        }
        self.metrics.count_labelled(
            SENT_TOTAL,
            &[
                ("channel", channel_label(&n.channel)),
                ("outcome", outcome.label()),
            ],
            1,
        );
        Ok(())
    }
}

/// The channel as a metric label: a known one, never a stored string.
fn channel_label(channel: &str) -> &'static str {
    if channel == CHANNEL { CHANNEL } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_attempts: i32) -> EmailConfig {
        EmailConfig {
            max_attempts,
            retry_base: Duration::from_secs(5),
            ..EmailConfig::default()
        }
    }

    #[test]
    fn the_backoff_doubles_from_the_base_up_to_fifteen_minutes() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 1), Duration::from_secs(5));
        assert_eq!(backoff(base, 2), Duration::from_secs(10));
        assert_eq!(backoff(base, 4), Duration::from_secs(40));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[test]
    fn a_refusal_for_now_is_retried_until_the_last_attempt_and_one_for_good_never() {
        let later = Err(SendError::Transient("451 4.3.0 try again later".into()));
        let never = Err(SendError::Permanent("550 5.1.1 mailbox unavailable".into()));
        assert_eq!(decide(&Ok(()), 3, &config(8)), (Outcome::Sent, None, None));
        let (outcome, error, retry) = decide(&later, 0, &config(8));
        assert_eq!(outcome, Outcome::Retried);
        assert_eq!(error.as_deref(), Some("451 4.3.0 try again later"));
        assert_eq!(retry, Some(Duration::from_secs(5)));
        let (outcome, error, retry) = decide(&later, 7, &config(8));
        assert_eq!((outcome, retry), (Outcome::Failed, None));
        assert!(error.unwrap().contains("attempt 8 of 8, the last"));
        assert_eq!(
            decide(&never, 0, &config(8)),
            (
                Outcome::Failed,
                Some("550 5.1.1 mailbox unavailable".into()),
                None
            )
        );
    }
}
