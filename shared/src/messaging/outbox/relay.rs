//! The relay: claims due rows (`FOR UPDATE SKIP LOCKED`, scheduled ones once per poll),
//! publishes them ([`super::publish`]), records the round ([`super::round`]) while the next one
//! claims, wakes on its process's commits or a NOTIFY, and purges published rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use lapin::Channel;
use lapin::options::ConfirmSelectOptions;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::messaging::envelope::MessageId;
use crate::messaging::link::{Link, note_generation};
use crate::messaging::{Names, connection, topology};
use crate::metrics::Metrics;

use super::round::Round;
use super::stage::{NOTIFY_CHANNEL, OutboxWaker};

/// How the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per round.
    pub batch_size: i64,
    /// How often it looks for rows when nothing woke it (and for due scheduled ones).
    pub poll_interval: Duration,
    /// Failed publishes before a row is parked as dead (only failures that are the row's own
    /// count: a broker that is down, nacks or withholds confirms is not the row's fault).
    pub max_attempts: i32,
    /// How long a round waits for the broker's confirms before it gives up on the channel.
    pub confirm_timeout: Duration,
    /// How long published rows are kept.
    pub retention: Duration,
    /// How long a woken relay waits for more rows before it claims.
    pub linger: Duration,
}

impl From<&crate::messaging::MessagingConfig> for RelayConfig {
    fn from(c: &crate::messaging::MessagingConfig) -> Self {
        Self {
            batch_size: c.outbox_batch,
            poll_interval: c.outbox_poll,
            max_attempts: c.outbox_max_attempts,
            confirm_timeout: c.outbox_confirm_timeout,
            retention: c.outbox_retention,
            linger: c.outbox_linger,
        }
    }
}

/// Publishes one service's staged events. Run it with [`Relay::run`]; several relays on one
/// database are safe.
#[derive(Debug, Clone)]
pub struct Relay {
    pub(super) pool: PgPool,
    pub(super) link: Link,
    pub(super) names: Names,
    pub(super) app_id: String,
    pub(super) config: RelayConfig,
    pub(super) waker: OutboxWaker,
    pub(super) metrics: Metrics,
    /// Rows published by rounds that ran after the shutdown signal.
    pub(super) drained: Arc<AtomicU64>,
    /// The generation of the link's connection the last session used.
    pub(super) generation: Arc<AtomicU64>,
    /// When the relay last looked for due scheduled rows (milliseconds since `started`).
    pub(super) scheduled_checked_ms: Arc<AtomicU64>,
    /// The relay's clock origin.
    pub(super) started: Instant,
    /// The routing keys whose unroutable messages were logged (once per key).
    pub(super) unroutable_logged: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Messages the fast path took and has not marked (or left to the claiming relay) yet.
    pub(super) fast_pending: Arc<AtomicUsize>,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ClaimedRow {
    pub(super) id: i64,
    pub(super) message_id: MessageId,
    pub(super) routing_key: String,
    pub(super) message_type: String,
    pub(super) payload: Vec<u8>,
    pub(super) correlation_id: String,
    pub(super) causation_id: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) tracestate: Option<String>,
    pub(super) actor_id: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) created_at: chrono::DateTime<chrono::Utc>,
    pub(super) attempts: i32,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed by the broker and marked published.
    pub published: usize,
    /// Rows that failed through their own fault (their attempt count went up).
    pub failed: usize,
    /// Rows the broker did not take (down, a nack, no confirm in time): tried again later,
    /// their attempt count unchanged.
    pub held: usize,
}

impl Relay {
    /// A relay publishing `app_id`'s outbox in `pool` on channels of `link` (the process's
    /// publishing connection).
    pub fn new(
        pool: PgPool,
        link: Link,
        names: Names,
        app_id: impl Into<String>,
        config: RelayConfig,
    ) -> Self {
        let app_id = app_id.into();
        Self {
            pool,
            link,
            names,
            metrics: Metrics::new(&app_id),
            app_id,
            config,
            waker: OutboxWaker::new(),
            drained: Arc::default(),
            generation: Arc::default(),
            scheduled_checked_ms: Arc::default(),
            started: Instant::now(),
            unroutable_logged: Arc::default(),
            fast_pending: Arc::default(),
        }
    }

    /// Whether this round also looks for scheduled rows that are due: at most once per poll
    /// interval (so a scheduled row is published at most a poll after it is due), never on the
    /// hot path of every round.
    fn scheduled_round(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.scheduled_checked_ms.load(Ordering::Relaxed);
        let every = self.config.poll_interval.as_millis() as u64;
        (now.saturating_sub(last) >= every || last == 0)
            && self
                .scheduled_checked_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The relay wakes when `waker` is woken (give the same waker to the code that commits).
    pub fn with_waker(mut self, waker: OutboxWaker) -> Self {
        self.waker = waker;
        self
    }

    /// Records what the relay publishes, its failures and its connections in `metrics` (the
    /// service's).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Publishes until `shutdown`, reconnecting after any broker or database failure. On
    /// shutdown the round in progress finishes, more rounds publish what was committed until
    /// then (until one finds nothing due), and the connection closes. Returns the rows those
    /// rounds published.
    pub async fn run(self, shutdown: CancellationToken) -> u64 {
        let what = format!("{} outbox relay", self.app_id);
        connection::supervise(&what, shutdown.clone(), || self.session(shutdown.clone())).await;
        self.drained.load(Ordering::Relaxed)
    }

    async fn session(&self, shutdown: CancellationToken) -> anyhow::Result<bool> {
        let leased = self.link.channel().await?;
        note_generation(&self.generation, &leased, &self.metrics);
        let channel = leased.channel;
        // The channel is the session's own: whatever ends the session closes it (the shared
        // connection stays for the other sessions, and is replaced by the link if it failed).
        // Hand-offs from before (a lost session's) are dropped: the first round claims them.
        self.waker.take_hand_offs(false);
        self.fast_pending.store(0, Ordering::Release);
        let result = tokio::select! {
            worked = self.work(&channel, shutdown) => worked,
            failed = self.fast_path(&channel) => failed.map(|()| false),
        };
        self.waker.take_hand_offs(false);
        if channel.status().connected() {
            let _ = channel.close(200, "relay stopping").await;
        }
        result
    }

    async fn work(&self, channel: &Channel, shutdown: CancellationToken) -> anyhow::Result<bool> {
        // Publisher confirms: the broker acknowledges every message once it is safely queued
        // (for persistent messages on quorum queues: written to a majority).
        channel
            .confirm_select(ConfirmSelectOptions { nowait: false })
            .await?;
        topology::declare_exchange(channel, &self.names).await?;

        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        tracing::info!(relay = %self.app_id, connection = %self.link.name(), "outbox relay connected");

        let mut last_purge = Instant::now();
        let mut worked = false;
        // While the fast path is open and in use, a round leaves the young rows to it (see
        // `claim_and_publish`); the first round, before hand-offs open, and the rounds that
        // drain at shutdown, after they close, take every due row.
        let mut first = true;
        // Whether hand-offs were closed for the shutdown: from then on every round takes
        // every due row.
        let mut closed = false;
        // The round claimed and published whose outcome is being recorded: its mark (UPDATE,
        // COMMIT) runs while the next round claims and publishes, so a commit's fsync is off
        // the path of the rows behind it. Its rows stay locked until then, so the next claim
        // skips them; it publishes only after every row of the round before was confirmed.
        let mut unmarked: Option<Round> = None;
        loop {
            // The round runs to completion even during shutdown: a claimed batch is either
            // confirmed and marked, or released, never left half done.
            let (claimed, marked) = match unmarked.take() {
                Some(previous) => {
                    let (claimed, marked) =
                        tokio::join!(self.claim_and_publish(channel, true), previous.mark(self));
                    (claimed, Some(marked))
                }
                None => (self.claim_and_publish(channel, true).await, None),
            };
            if std::mem::take(&mut first) && !shutdown.is_cancelled() {
                self.waker.take_hand_offs(true);
            }
            if let Some(marked) = marked {
                match marked {
                    Ok(outcome) => self.settled(&outcome, &shutdown, &mut worked),
                    Err(e) => return Err(e.context("outbox round failed")),
                }
            }
            let round = match claimed {
                Ok(round) => round,
                Err(e) => return Err(e.context("outbox round failed")),
            };
            let claimed = round.claimed;
            let full = claimed as i64 >= self.config.batch_size;
            // More rows committed while this round ran: go on at once, marking this round
            // meanwhile. Otherwise record it now, before waiting.
            let more = full || self.waker.woken().now_or_never().is_some();
            if more && channel.status().connected() {
                unmarked = Some(round);
            } else {
                match round.mark(self).await {
                    Ok(outcome) => self.settled(&outcome, &shutdown, &mut worked),
                    Err(e) => return Err(e.context("outbox round failed")),
                }
            }
            if !channel.status().connected() {
                anyhow::bail!("the relay's channel closed");
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                self.purge().await?;
                last_purge = Instant::now();
            }
            if shutdown.is_cancelled() {
                if !std::mem::replace(&mut closed, true) {
                    // Stopping: no more hand-offs (a commit from now on wakes the claiming
                    // loop), and what the fast path has in flight is confirmed and marked
                    // first, so the rounds below do not publish it again.
                    self.waker.take_hand_offs(false);
                    let waited = Instant::now();
                    while !self.fast_path_idle() && waited.elapsed() < self.config.confirm_timeout {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    // The rounds so far left the young rows to the fast path, and what waited
                    // for it was dropped with the hand-offs: at least one more round, which
                    // takes every due row.
                    continue;
                }
                // Go on until a round finds nothing due.
                if claimed > 0 || unmarked.is_some() {
                    continue;
                }
                return Ok(worked);
            }
            if more {
                // Rows keep coming: let a few more gather for the next round.
                if !full && !self.config.linger.is_zero() {
                    tokio::time::sleep(self.config.linger).await;
                }
                continue;
            }
            tokio::select! {
                notification = listener.recv() => {
                    if let Err(e) = notification {
                        // The listener reconnects by itself; polling covers the gap.
                        tracing::debug!(error = %e, "outbox listener interrupted");
                        tokio::time::sleep(self.config.poll_interval.min(Duration::from_millis(100))).await;
                    }
                }
                () = self.waker.woken() => {
                    if !self.config.linger.is_zero() {
                        tokio::time::sleep(self.config.linger).await;
                    }
                }
                () = tokio::time::sleep(self.config.poll_interval) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// Books a marked round: work done, and rows drained after the shutdown signal.
    fn settled(&self, outcome: &RoundOutcome, shutdown: &CancellationToken, worked: &mut bool) {
        *worked |= outcome.published > 0;
        if shutdown.is_cancelled() {
            self.drained
                .fetch_add(outcome.published as u64, Ordering::Relaxed);
        }
    }

    /// Claims up to `batch_size` due rows, publishes them and records the outcome, in one
    /// transaction. Public so tests and the benchmark can drive the relay step by step.
    pub async fn publish_round(&self, channel: &Channel) -> anyhow::Result<RoundOutcome> {
        self.claim_and_publish(channel, false)
            .await?
            .mark(self)
            .await
    }

    /// The first half of a round: claims up to `batch_size` due rows and publishes them, each
    /// confirmed (or failed) by the broker. The rows stay locked by the round's transaction
    /// until [`Round::mark`] records the outcome, so another round (of this relay or another)
    /// skips them meanwhile.
    ///
    /// With `leave_young`, while the fast path is open and in use (something was handed over
    /// within the grace period, `OUTBOX_CONFIRM_TIMEOUT_MS`), rows staged less than the grace
    /// ago are left to it: it may be publishing them. That is decided once the round has its
    /// connection (a round may wait long for one under load, while the first hand-offs after a
    /// quiet spell come in), and again after the claim: when the fast path came into use while
    /// the round claimed, the young rows it claimed are left too (still locked by the round,
    /// so the fast path's mark of them waits for the round's end).
    async fn claim_and_publish(
        &self,
        channel: &Channel,
        leave_young: bool,
    ) -> anyhow::Result<Round> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let grace = self.config.confirm_timeout;
        let in_use = leave_young && self.waker.fast_path_in_use(grace);
        // SKIP LOCKED: rows another relay is publishing right now are not ours to take; FOR
        // UPDATE keeps them ours until this transaction ends.
        // Rows to publish now, through the `outbox_pending` index, which holds no scheduled
        // row: the deadlines of the orders in flight (each inserted, then mostly deleted when
        // the order is answered) never lengthen this scan.
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(concat!(
            "SELECT ",
            claimed_columns!(),
            " FROM outbox \
                 WHERE published_at IS NULL AND NOT dead AND due_at IS NULL \
                   AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
                   AND created_at <= now() - make_interval(secs => $2) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(self.config.batch_size)
        .bind(if in_use { grace.as_secs_f64() } else { 0.0 })
        .fetch_all(&mut *tx)
        .await?;
        if leave_young && !in_use && self.waker.fast_path_in_use(grace) {
            // Handed over while this round claimed: what is that young may be on its way.
            let cutoff = chrono::Duration::from_std(grace)
                .ok()
                .and_then(|grace| chrono::Utc::now().checked_sub_signed(grace));
            rows.retain(|row| cutoff.is_some_and(|cutoff| row.created_at <= cutoff));
        }
        // Scheduled rows that are due, through `outbox_scheduled` (a range up to now: the
        // future and the cancelled ones are not visited), once per poll interval.
        let room = self.config.batch_size - rows.len() as i64;
        if room > 0 && self.scheduled_round() {
            let due: Vec<ClaimedRow> = sqlx::query_as(concat!(
                "SELECT ",
                claimed_columns!(),
                " FROM outbox \
                     WHERE due_at <= now() AND published_at IS NULL AND NOT dead \
                       AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
                     ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
            rows.extend(due);
        }
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Round::default());
        }

        // Fresh rows go out pipelined. Rows that failed before go out one at a time, after the
        // fresh ones, so a row that breaks the channel only ever takes itself down.
        let (fresh, retried): (Vec<&ClaimedRow>, Vec<&ClaimedRow>) =
            rows.iter().partition(|r| r.attempts == 0);
        let mut round = Round {
            claimed: rows.len(),
            ..Round::default()
        };
        let results = self.publish_pipelined(channel, &fresh).await;
        for (row, result) in fresh.iter().zip(results) {
            round.record(row, result, channel);
        }
        for row in retried {
            if round.broken.is_some() {
                break; // not attempted: leave it as it is
            }
            let result = self.publish_pipelined(channel, &[row]).await.remove(0);
            round.record(row, result, channel);
        }
        round.tx = Some(tx);
        round.started = Some(started);
        Ok(round)
    }

    /// Deletes published rows older than the retention period.
    pub async fn purge(&self) -> Result<u64, sqlx::Error> {
        let retention = self.config.retention.as_secs_f64();
        let done = sqlx::query(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(retention)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
