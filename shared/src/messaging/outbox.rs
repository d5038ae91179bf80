//! The transactional outbox: events are staged in the same database transaction as the state
//! change that caused them, and a relay publishes them afterwards with publisher confirms.
//!
//! A staged event is published if and only if its transaction commits (at least once: a crash
//! between the confirm and the UPDATE publishes it again, and the consumers' inbox absorbs the
//! duplicate). The relay:
//! - claims rows with `FOR UPDATE SKIP LOCKED`, so several relays (replicas) never publish the
//!   same row at the same time;
//! - publishes a batch pipelined (every publish sent, then every confirm awaited) and marks the
//!   confirmed rows published with one UPDATE;
//! - wakes as soon as its own process committed outbox rows ([`OutboxWaker`]), on
//!   `LISTEN shop_outbox` for writers elsewhere ([`notify_relays`]), and polls as the fallback
//!   (a per-commit NOTIFY trigger would serialise every commit: see the migration
//!   `20261123000001_outbox_wake_in_process.sql`);
//! - isolates a row that keeps failing: a failed row is retried alone, after a delay, and
//!   parked as `dead` after `max_attempts`, so it never blocks the rows behind it;
//! - purges published rows after the retention period;
//! - counts what it published per routing key, its failed publishes and how long its rounds
//!   take, in the service's [`Metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, publisher_confirm::Confirmation};
use shop_proto::Event;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::envelope::{Envelope, EventContext};
use super::link::{Link, note_generation};
use super::{Names, connection, topology};
use crate::metrics::Metrics;
use crate::telemetry::propagation::{TraceFields, continue_trace};

/// The NOTIFY channel relays LISTEN on.
pub const NOTIFY_CHANNEL: &str = "shop_outbox";

/// Wakes the relay of this process after a commit that staged events: the in-process,
/// zero-cost path (no database round trip, no commit-time lock).
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(std::sync::Arc<tokio::sync::Notify>);

impl OutboxWaker {
    /// A waker no relay listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the relay (or makes its next wait return at once).
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Wakes every relay on the database, for a writer outside a service process (a tool that
/// staged rows): `NOTIFY shop_outbox`. Services use their [`OutboxWaker`] instead.
pub async fn notify_relays(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stages `event` in the caller's transaction: it is published after the transaction commits,
/// and never if it rolls back. Returns the event's message id.
///
/// Only an [`Event`] (a proto message with a routing key) can be staged: a resource such as a
/// `User` is a compile error, not a runtime surprise.
///
/// ```compile_fail,E0277
/// use shop_proto::user::v1::User;
/// use shop_shared::messaging::{EventContext, stage};
///
/// async fn publish_user(conn: &mut sqlx::PgConnection) {
///     let _ = stage(conn, &User::default(), &EventContext::new_flow()).await;
/// }
/// ```
pub async fn stage<E: Event>(
    conn: &mut PgConnection,
    event: &E,
    context: &EventContext,
) -> Result<String, sqlx::Error> {
    let envelope = Envelope::new(event, "", context);
    stage_envelope(conn, &envelope).await?;
    Ok(envelope.message_id)
}

/// Stages one event in several shapes (a v1 beside its v2: [`super::shapes`]) in the caller's
/// transaction, one row per shape not `retired`, all under one message id, which it returns.
pub async fn stage_shapes(
    conn: &mut PgConnection,
    shapes: super::Shapes,
    retired: &super::Retired,
) -> Result<String, sqlx::Error> {
    let message_id = shapes.message_id().to_owned();
    stage_envelopes(conn, &shapes.to_publish(retired)).await?;
    Ok(message_id)
}

/// Stages a prepared envelope (its `app_id` is ignored: the relay sets its own).
pub async fn stage_envelope(
    conn: &mut PgConnection,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    insert(conn, envelope, None, None).await
}

/// Inserts one outbox row: published as soon as possible, or (with `due` and `key`) not before
/// `due`, cancellable by `key` ([`super::schedule`]).
pub(super) async fn insert(
    conn: &mut PgConnection,
    envelope: &Envelope,
    due: Option<chrono::DateTime<chrono::Utc>>,
    key: Option<&str>,
) -> Result<(), sqlx::Error> {
    let message_id = uuid::Uuid::parse_str(&envelope.message_id)
        .map_err(|e| sqlx::Error::Protocol(format!("message id is not a UUID: {e}")))?;
    sqlx::query(
        "INSERT INTO outbox (message_id, routing_key, message_type, payload, correlation_id, \
         causation_id, traceparent, tracestate, actor_id, subject, due_at, schedule_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(message_id)
    .bind(&envelope.routing_key)
    .bind(&envelope.message_type)
    .bind(&envelope.payload)
    .bind(&envelope.correlation_id)
    .bind(&envelope.causation_id)
    .bind(&envelope.traceparent)
    .bind(&envelope.tracestate)
    .bind(&envelope.actor_id)
    .bind(&envelope.subject)
    .bind(due)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stages many prepared envelopes in one statement (how a consumer batch stages the events
/// of all its handlers: one round trip instead of one per event).
pub async fn stage_envelopes(
    conn: &mut PgConnection,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(envelopes.len());
    for e in envelopes {
        ids.push(
            uuid::Uuid::parse_str(&e.message_id)
                .map_err(|err| sqlx::Error::Protocol(format!("message id is not a UUID: {err}")))?,
        );
    }
    let column = |f: fn(&Envelope) -> &String| envelopes.iter().map(f).cloned().collect::<Vec<_>>();
    let optional = |f: fn(&Envelope) -> &Option<String>| {
        envelopes
            .iter()
            .map(f)
            .cloned()
            .collect::<Vec<Option<String>>>()
    };
    let payloads: Vec<Vec<u8>> = envelopes.iter().map(|e| e.payload.clone()).collect();
    sqlx::query(
        "INSERT INTO outbox (message_id, routing_key, message_type, payload, correlation_id, \
         causation_id, traceparent, tracestate, actor_id, subject) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
    )
    .bind(&ids)
    .bind(column(|e| &e.routing_key))
    .bind(column(|e| &e.message_type))
    .bind(&payloads)
    .bind(column(|e| &e.correlation_id))
    .bind(optional(|e| &e.causation_id))
    .bind(optional(|e| &e.traceparent))
    .bind(optional(|e| &e.tracestate))
    .bind(optional(|e| &e.actor_id))
    .bind(column(|e| &e.subject))
    .execute(conn)
    .await?;
    Ok(())
}

/// How the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per round.
    pub batch_size: i64,
    /// Polling fallback when no NOTIFY arrives.
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

impl From<&crate::config::MessagingConfig> for RelayConfig {
    fn from(c: &crate::config::MessagingConfig) -> Self {
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
    pool: PgPool,
    link: Link,
    names: Names,
    app_id: String,
    config: RelayConfig,
    waker: OutboxWaker,
    metrics: Metrics,
    /// Rows published by rounds that ran after the shutdown signal.
    drained: Arc<AtomicU64>,
    /// The generation of the link's connection the last session used.
    generation: Arc<AtomicU64>,
    /// When the relay last looked for due scheduled rows (milliseconds since `started`).
    scheduled_checked_ms: Arc<AtomicU64>,
    /// The relay's clock origin.
    started: Instant,
    /// The routing keys whose unroutable messages were logged (once per key).
    unroutable_logged: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

#[derive(Debug, sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    message_id: uuid::Uuid,
    routing_key: String,
    message_type: String,
    payload: Vec<u8>,
    correlation_id: String,
    causation_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    actor_id: Option<String>,
    subject: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    attempts: i32,
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
        let result = self.work(&channel, shutdown).await;
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
                        tokio::join!(self.claim_and_publish(channel), previous.mark(self));
                    (claimed, Some(marked))
                }
                None => (self.claim_and_publish(channel).await, None),
            };
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
                // Stopping: the round that was running when the signal came may have missed
                // rows committed just before it, so go on until a round finds nothing due.
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
        self.claim_and_publish(channel).await?.mark(self).await
    }

    /// The first half of a round: claims up to `batch_size` due rows and publishes them, each
    /// confirmed (or failed) by the broker. The rows stay locked by the round's transaction
    /// until [`Round::mark`] records the outcome, so another round (of this relay or another)
    /// skips them meanwhile.
    async fn claim_and_publish(&self, channel: &Channel) -> anyhow::Result<Round> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: rows another relay is publishing right now are not ours to take; FOR
        // UPDATE keeps them ours until this transaction ends.
        // Rows to publish now, through the `outbox_pending` index, which holds no scheduled
        // row: the deadlines of the orders in flight (each inserted, then mostly deleted when
        // the order is answered) never lengthen this scan.
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT id, message_id, routing_key, message_type, payload, correlation_id, \
                    causation_id, traceparent, tracestate, actor_id, subject, created_at, \
                    attempts \
             FROM outbox \
             WHERE published_at IS NULL AND NOT dead AND due_at IS NULL \
               AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        // Scheduled rows that are due, through `outbox_scheduled` (a range up to now: the
        // future and the cancelled ones are not visited), once per poll interval.
        let room = self.config.batch_size - rows.len() as i64;
        if room > 0 && self.scheduled_round() {
            let due: Vec<ClaimedRow> = sqlx::query_as(
                "SELECT id, message_id, routing_key, message_type, payload, correlation_id, \
                        causation_id, traceparent, tracestate, actor_id, subject, created_at, \
                        attempts \
                 FROM outbox \
                 WHERE due_at <= now() AND published_at IS NULL AND NOT dead \
                   AND (next_attempt_at IS NULL OR next_attempt_at <= now()) \
                 ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
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

    /// Counts a committed round: the events confirmed and marked, per routing key, the failed
    /// publishes, and the round's duration.
    fn count_round(
        &self,
        started: Instant,
        published_keys: &[&str],
        returned: &[(String, String)],
        failed: usize,
    ) {
        let exchange = self.names.exchange();
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for key in published_keys {
            match counts.iter_mut().find(|(k, _)| k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        for (key, n) in counts {
            self.metrics.messages_sent(&exchange, key, n);
        }
        if failed > 0 {
            self.metrics.publish_failed(failed as u64);
        }
        for (key, message_id) in returned {
            self.metrics.unroutable(key);
            let first = self
                .unroutable_logged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone());
            if first {
                tracing::warn!(
                    routing_key = %key,
                    message_id = %message_id,
                    "a published event reached no queue (no queue is bound to its routing key); \
                     counted in shop_unroutable_messages_total, logged once per key"
                );
            }
        }
        self.metrics.relay_round(started.elapsed());
    }

    /// Sends every row, then awaits every confirm: one round trip for the whole batch.
    ///
    /// Each message gets a producer span whose parent is the span that staged the row (its
    /// stored trace context), so the publish continues the request's trace, not the relay
    /// loop's; the message carries the producer span's context in its headers.
    async fn publish_pipelined(&self, channel: &Channel, rows: &[&ClaimedRow]) -> Vec<Sent> {
        let exchange = self.names.exchange();
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let mut envelope = self.envelope(row);
            let span = tracing::info_span!(
                "amqp.publish",
                otel.name = %format!("{} publish", envelope.routing_key),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "rabbitmq",
                messaging.operation.type = "publish",
                messaging.destination.name = %exchange,
                messaging.rabbitmq.destination.routing_key = %envelope.routing_key,
                messaging.message.id = %envelope.message_id,
                messaging.message.conversation_id = %envelope.correlation_id,
                shop.service = %self.app_id,
                trace_id = tracing::field::Empty,
            );
            let stored = TraceFields {
                traceparent: envelope.traceparent.take(),
                tracestate: envelope.tracestate.take(),
            };
            continue_trace(&span, stored.to_context());
            let produced = TraceFields::from_context(&span.context());
            // Without an OpenTelemetry layer (telemetry not initialised) the span has no
            // context of its own: pass the stored one on, so the trace never breaks here.
            let carried = if produced.traceparent.is_some() {
                produced
            } else {
                stored
            };
            envelope.traceparent = carried.traceparent;
            envelope.tracestate = carried.tracestate;
            let sent = match check_publishable(&envelope) {
                Err(e) => Err(Sent::RowFault(e)),
                Ok(()) => channel
                    .basic_publish(
                        &exchange,
                        &envelope.routing_key,
                        BasicPublishOptions {
                            // Returned, not dropped, when no queue is bound to its key: counted.
                            mandatory: true,
                            immediate: false, // not supported by RabbitMQ
                        },
                        &envelope.payload,
                        envelope.properties(now),
                    )
                    .await
                    .map_err(|e| Sent::failed(&e)),
            };
            pending.push((sent, span));
        }
        let timeout = self.config.confirm_timeout;
        let confirms = pending.into_iter().map(|(sent, span)| async move {
            let outcome = match sent {
                Err(failed) => failed,
                Ok(confirm) => match tokio::time::timeout(timeout, confirm).await {
                    Ok(Ok(Confirmation::Ack(returned))) => Sent::Confirmed {
                        returned: returned.is_some(),
                    },
                    Ok(Ok(Confirmation::NotRequested)) => Sent::Confirmed { returned: false },
                    Ok(Ok(Confirmation::Nack(_))) => {
                        Sent::BrokerFault("the broker nacked the message".to_owned())
                    }
                    Ok(Err(e)) => Sent::failed(&e),
                    Err(_) => Sent::TimedOut(timeout),
                },
            };
            if !matches!(outcome, Sent::Confirmed { .. }) {
                span.record("otel.status_code", "ERROR");
            }
            // The producer span ends here, once the broker has answered.
            drop(span);
            outcome
        });
        join_all(confirms).await
    }

    fn envelope(&self, row: &ClaimedRow) -> Envelope {
        Envelope {
            message_id: row.message_id.to_string(),
            message_type: row.message_type.clone(),
            routing_key: row.routing_key.clone(),
            payload: row.payload.clone(),
            app_id: self.app_id.clone(),
            correlation_id: row.correlation_id.clone(),
            causation_id: row.causation_id.clone(),
            actor_id: row.actor_id.clone(),
            traceparent: row.traceparent.clone(),
            tracestate: row.tracestate.clone(),
            subject: row.subject.clone().unwrap_or_default(),
            staged_at: Some(row.created_at),
        }
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

/// AMQP short strings (routing key, type and the other properties) hold at most 255 bytes;
/// a longer one cannot be sent, so the row fails here instead of breaking the connection.
fn check_publishable(envelope: &Envelope) -> Result<(), String> {
    for (what, value) in [
        ("routing key", &envelope.routing_key),
        ("type", &envelope.message_type),
        ("correlation id", &envelope.correlation_id),
    ] {
        if value.len() > 255 {
            return Err(format!("{what} is {} bytes, AMQP allows 255", value.len()));
        }
    }
    Ok(())
}

/// How the broker took one message of a round.
#[derive(Debug)]
enum Sent {
    /// Confirmed: the row is published. `returned`: no queue was bound to its key (mandatory),
    /// which is counted and logged but is not the row's failure.
    Confirmed { returned: bool },
    /// The row itself cannot be sent, or broke the channel (a channel-level error): counts
    /// against its attempts, and it is parked after `max_attempts`.
    RowFault(String),
    /// The broker is down or did not take the message (a nack, a lost connection): the row is
    /// published again later, its attempts unchanged.
    BrokerFault(String),
    /// No confirm within the timeout: as a broker fault, and the channel is given up.
    TimedOut(Duration),
}

impl Sent {
    /// Whose fault a client error is: a channel-level (soft) error closed the channel because
    /// of what was sent; anything else (the connection lost, closed by the broker) is the
    /// broker's.
    fn failed(error: &lapin::Error) -> Self {
        match error {
            lapin::Error::ProtocolError(e)
                if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
            {
                Sent::RowFault(error.to_string())
            }
            _ => Sent::BrokerFault(error.to_string()),
        }
    }
}

/// A round claimed and published, its outcome not recorded yet: its transaction holds the
/// claimed rows.
#[derive(Default)]
struct Round {
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    started: Option<Instant>,
    claimed: usize,
    published: Vec<i64>,
    published_keys: Vec<String>,
    /// Published rows the broker returned as unroutable: (routing key, message id).
    returned: Vec<(String, String)>,
    /// Rows that failed through their own fault.
    failed: Vec<(i64, String)>,
    /// Rows the broker did not take: published again later, attempts unchanged.
    held: Vec<i64>,
    held_error: Option<String>,
    /// Why the channel cannot be used any more.
    broken: Option<String>,
}

impl Round {
    /// Records how the broker took `row`.
    fn record(&mut self, row: &ClaimedRow, sent: Sent, channel: &Channel) {
        let channel_lost = !channel.status().connected();
        match sent {
            Sent::Confirmed { returned } => {
                self.published.push(row.id);
                self.published_keys.push(row.routing_key.clone());
                if returned {
                    self.returned
                        .push((row.routing_key.clone(), row.message_id.to_string()));
                }
                return;
            }
            Sent::RowFault(e) => self.failed.push((row.id, e)),
            Sent::BrokerFault(e) => {
                self.held.push(row.id);
                self.held_error.get_or_insert(e);
            }
            Sent::TimedOut(timeout) => {
                let e = format!(
                    "no confirm from the broker within {timeout:?} (OUTBOX_CONFIRM_TIMEOUT_MS)"
                );
                self.held.push(row.id);
                self.held_error.get_or_insert(e.clone());
                self.broken.get_or_insert(e);
            }
        }
        if channel_lost && self.broken.is_none() {
            self.broken = self
                .held_error
                .clone()
                .or_else(|| self.failed.last().map(|(_, e)| e.clone()));
        }
    }

    /// The second half of a round: marks the confirmed rows published and the failed ones
    /// failed, and commits.
    async fn mark(self, relay: &Relay) -> anyhow::Result<RoundOutcome> {
        let Round {
            tx,
            started,
            claimed,
            published,
            published_keys,
            returned,
            failed,
            held,
            held_error,
            broken,
        } = self;
        let (Some(mut tx), Some(started)) = (tx, started) else {
            return Ok(RoundOutcome::default());
        };
        let published_keys: Vec<&str> = published_keys.iter().map(String::as_str).collect();
        if !published.is_empty() {
            // Not a persistent prepared statement: a cached generic plan for `id = ANY($1)`
            // is made while the outbox is young and unanalyzed, and it seq-scans the table
            // (every published row) on every round until autovacuum's first ANALYZE, a minute
            // or more later. Planned with the real ids, it is an index scan on the primary key.
            sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
                .bind(&published)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for (id, error) in &failed {
            // Each failure doubles the wait (1 s, 2 s, … up to 60 s); past max_attempts the row
            // is parked as dead for an operator, and the rows behind it flow on.
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
                   dead = attempts + 1 >= $3, \
                   next_attempt_at = now() + least(interval '60 seconds', \
                                                   interval '1 second' * power(2, attempts)) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(relay.config.max_attempts)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(outbox_id = id, error = %error, "outbox row failed to publish");
        }
        if let (false, Some(error)) = (held.is_empty(), &held_error) {
            // Not the rows' fault: their attempts stay as they are, they are tried again after a
            // second (on a new channel when this one is lost), and they are never parked for it.
            sqlx::query(
                "UPDATE outbox SET last_error = $2, next_attempt_at = now() + interval '1 second' \
                 WHERE id = ANY($1)",
            )
            .bind(&held)
            .bind(error)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(rows = held.len(), error = %error, "the broker did not take outbox rows; publishing them again later");
        }
        tx.commit().await?;
        relay.count_round(
            started,
            &published_keys,
            &returned,
            failed.len() + held.len(),
        );

        if let Some(e) = broken {
            anyhow::bail!("broker channel failed while publishing: {e}");
        }
        Ok(RoundOutcome {
            claimed,
            published: published.len(),
            failed: failed.len(),
            held: held.len(),
        })
    }
}
