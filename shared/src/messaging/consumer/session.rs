//! The consumer's session: connect, declare, consume on a few channels, take ready deliveries
//! as batches, settle them (`apply`, `divert`) and acknowledge each batch once; sample the
//! queue and dead-letter depths; reconnect after failures; finish the batches in progress on
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer as AmqpConsumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::db::{KeptConnection, PING_IF_IDLE_FOR};
use crate::input;
use crate::messaging::MessagingConfig;
#[cfg(feature = "test-util")]
use crate::messaging::envelope::Envelope;
use crate::messaging::link::{Link, note_generation};
use crate::messaging::outbox::OutboxWaker;
use crate::messaging::{Names, connection, quarantine, topology};
use crate::metrics::{Metrics, Outcome};

use super::apply::{Arrival, Settlement};
use super::divert::Divert;
use super::subscriptions::{OTHER_LABEL, Subscriptions};

/// Consumes one service's queue until shutdown, reconnecting after failures.
#[derive(Debug, Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) pool: PgPool,
    pub(super) link: Link,
    pub(super) names: Names,
    pub(super) service: String,
    pub(super) subscriptions: Subscriptions,
    pub(super) config: MessagingConfig,
    pub(super) waker: OutboxWaker,
    pub(super) metrics: Metrics,
    /// Deliveries settled (applied and acked, retried or dead-lettered) by batches that were
    /// in progress when the shutdown signal came.
    pub(super) drained: AtomicU64,
    /// The generation of the link's connection the last session used.
    pub(super) generation: AtomicU64,
}

impl Consumer {
    /// A consumer of `service`'s queue (`{prefix}<service>`) applying `subscriptions`, on
    /// channels of `link` (the process's consuming connection).
    pub fn new(
        pool: PgPool,
        link: Link,
        names: Names,
        service: impl Into<String>,
        subscriptions: Subscriptions,
        config: MessagingConfig,
    ) -> Self {
        let service = service.into();
        Self {
            inner: Arc::new(Inner {
                pool,
                link,
                names,
                metrics: Metrics::new(&service),
                service,
                subscriptions,
                config,
                waker: OutboxWaker::new(),
                drained: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Wakes `waker` after committing a batch whose handlers staged events (give it the
    /// relay's waker). Call before the consumer is cloned or run.
    pub fn with_waker(mut self, waker: OutboxWaker) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.waker = waker;
        }
        self
    }

    /// Records the consumer's deliveries, connections and dead letters in `metrics` (the
    /// service's). Call before the consumer is cloned or run.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = metrics;
        }
        self
    }

    /// Declares the topology once (so events published before the first delivery are queued).
    pub async fn declare(&self) -> anyhow::Result<()> {
        let channel = self.inner.link.channel().await?.channel;
        let declared = self.inner.declare(&channel).await;
        let _ = channel.close(200, "declared").await;
        Ok(declared?)
    }

    /// Consumes until `shutdown`. On shutdown no new batch starts, the batches in progress
    /// are finished and acknowledged, then the consumers are cancelled and the channels and
    /// the connection close (unacknowledged prefetched deliveries go back to the queue).
    /// Returns the deliveries those last batches settled.
    pub async fn run(self, shutdown: CancellationToken) -> u64 {
        let what = format!("{} consumer", self.inner.service);
        let inner = self.inner.clone();
        connection::supervise(&what, shutdown.clone(), || {
            inner.clone().session(shutdown.clone())
        })
        .await;
        self.inner.drained.load(Ordering::Relaxed)
    }

    /// Applies `batch` as if the broker had delivered exactly these messages as one batch,
    /// through the same decoding, inbox, handlers and transactions as a real delivery, but
    /// without a broker: nothing is acknowledged, and a message that would be retried or
    /// dead-lettered is only reported. With `crash_after`, the batch's transaction is rolled
    /// back after that many handlers and this fails as a crash would (nothing applied). For
    /// the saga simulation, which chooses every batch's composition itself.
    #[cfg(feature = "test-util")]
    pub async fn apply_for_test(
        &self,
        batch: &[Envelope],
        crash_after: Option<usize>,
    ) -> anyhow::Result<Vec<Outcome>> {
        let arrivals = batch
            .iter()
            .map(|e| Arrival {
                properties: e.properties(0),
                body: e.payload.clone(),
                routing_key: e.routing_key.clone(),
            })
            .collect();
        let mut db = KeptConnection::new(self.inner.pool.clone());
        let Settlement { settled, diverted } =
            self.inner.settle(&mut db, arrivals, crash_after).await?;
        let mut outcomes: Vec<Outcome> = settled.into_iter().map(|(_, o)| o).collect();
        outcomes.extend(diverted.iter().map(|d| match d.divert {
            Divert::Retry(_) => Outcome::Retried,
            Divert::DeadLetter(_) => Outcome::DeadLettered,
        }));
        Ok(outcomes)
    }
}

impl Inner {
    async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        topology::declare_consumer(
            channel,
            &self.names,
            &self.service,
            &self.subscriptions.routing_keys(),
            &self.config.retry,
            self.config.queue_replicas,
        )
        .await?;
        topology::unbind(
            channel,
            &self.names,
            &self.service,
            self.subscriptions.moved_from_keys(),
        )
        .await
    }

    async fn session(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<bool> {
        let setup = self.link.channel().await?;
        note_generation(&self.generation, &setup, &self.metrics);
        let declared = self.declare(&setup.channel).await;
        let _ = setup.channel.close(200, "declared").await;
        declared?;
        // Every channel the session opens is closed when the session ends, whatever ends it:
        // on the shared connection, a channel left open would keep its prefetched deliveries
        // unacknowledged (and its consumer receiving) for as long as the process lives.
        let channels = std::sync::Mutex::new(Vec::new());
        let result = self.clone().consume(&channels, shutdown).await;
        let channels = std::mem::take(&mut *channels.lock().unwrap_or_else(|p| p.into_inner()));
        for channel in channels {
            if channel.status().connected() {
                let _ = channel.close(200, "consumer stopping").await;
            }
        }
        match result {
            Err(error) if quarantine::is_parse_error(&error) => {
                tracing::warn!(consumer = %self.service, error = %format!("{error:#}"), "the AMQP client could not read a delivery; looking for it at the head of the queue");
                if self.quarantine().await {
                    // The poison is gone: reconnect at once, as after useful work.
                    Ok(true)
                } else {
                    Err(error)
                }
            }
            result => result,
        }
    }

    /// Looks for a message lapin cannot parse at the head of the service's queue and moves it
    /// to the DLQ (see [`quarantine`]); true when one was moved. Every delivery that could
    /// have been in flight with it is looked at: the prefetch of every consuming channel.
    async fn quarantine(&self) -> bool {
        let queue = self.names.queue(&self.service);
        let dlq = self.names.dlq(&self.service);
        let look_at = usize::from(self.config.prefetch.max(1)) * self.config.concurrency.max(1);
        let mut failure = None;
        for node in connection::node_urls(self.link.url()) {
            match quarantine::dead_letter_unreadable(node, &queue, &dlq, look_at).await {
                Ok(quarantine::Found::DeadLettered { routing_key, error }) => {
                    tracing::warn!(consumer = %self.service, queue = %queue, dlq = %dlq, routing_key = %input::shown(&routing_key), reason = %error, "a delivery the AMQP client cannot read was copied to the DLQ and removed");
                    self.metrics.delivery_settled(
                        &queue,
                        OTHER_LABEL,
                        Outcome::DeadLettered,
                        Duration::ZERO,
                    );
                    return true;
                }
                Ok(quarantine::Found::Nothing { looked_at }) => {
                    tracing::info!(consumer = %self.service, queue = %queue, looked_at, "no unreadable delivery at the head of the queue");
                    return false;
                }
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            tracing::error!(consumer = %self.service, queue = %queue, error = %error, "could not look for the unreadable delivery: it stays at the head of the queue and the consumer keeps reconnecting until it is removed (shop dlq cannot read it either; `rabbitmqctl purge_queue` or a client that can)");
        }
        false
    }

    /// Opens the consuming channels (each recorded in `channels`) and runs their loops and
    /// the dead-letter sampler until shutdown or the first failure.
    async fn consume(
        self: Arc<Self>,
        channels: &std::sync::Mutex<Vec<Channel>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<bool> {
        let keep = |channel: &Channel| {
            channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(channel.clone());
        };
        let mut loops = Vec::new();
        for i in 0..self.config.concurrency {
            let channel = self.link.channel().await?.channel;
            keep(&channel);
            // Confirms on the consuming channel: retry and DLQ copies are confirmed before the
            // original is acknowledged.
            channel
                .confirm_select(ConfirmSelectOptions { nowait: false })
                .await?;
            // Prefetch bounds the unacknowledged deliveries in flight on this channel.
            channel
                .basic_qos(self.config.prefetch, BasicQosOptions { global: false })
                .await?;
            let consumer = channel
                .basic_consume(
                    &self.names.queue(&self.service),
                    &format!(
                        "{}-{}-{i}-{}",
                        self.link.name(),
                        self.service,
                        uuid::Uuid::new_v4().simple()
                    ),
                    BasicConsumeOptions {
                        no_local: false,  // irrelevant to RabbitMQ
                        no_ack: false,    // manual acks: ack only after the commit
                        exclusive: false, // replicas compete for the same queue
                        nowait: false,    // wait for consume-ok
                    },
                    FieldTable::default(),
                )
                .await?;
            loops.push(
                self.clone()
                    .consume_loop(channel, consumer, shutdown.clone()),
            );
        }
        tracing::info!(consumer = %self.service, connection = %self.link.name(), channels = loops.len(), "consumer connected");
        let consuming = futures::future::try_join_all(loops);
        tokio::pin!(consuming);
        let result = tokio::select! {
            result = &mut consuming => result,
            // The sampler only ends on shutdown, when the loops are winding down.
            () = self.sample_queues(&keep, shutdown.clone()) => consuming.await,
        };
        result.map(|worked| worked.into_iter().any(|w| w))
    }

    async fn consume_loop(
        self: Arc<Self>,
        channel: Channel,
        mut consumer: AmqpConsumer,
        shutdown: CancellationToken,
    ) -> anyhow::Result<bool> {
        let mut worked = false;
        // The channel's batches run one after another on one connection, kept while they come
        // and given back after a quiet second (as long as the pool hands one out unpinged).
        let mut db = KeptConnection::new(self.pool.clone());
        loop {
            let first = tokio::select! {
                // Prefetched deliveries are always ready: without the bias a stopping
                // consumer could go on starting batches.
                biased;
                () = shutdown.cancelled() => {
                    let _ = channel
                        .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
                        .await;
                    let _ = channel.close(200, "consumer stopping").await;
                    return Ok(worked);
                }
                next = consumer.next() => next,
                () = tokio::time::sleep(PING_IF_IDLE_FOR), if db.is_kept() => {
                    db.release();
                    continue;
                }
            };
            let first = match first {
                Some(delivery) => delivery?,
                None => anyhow::bail!("the broker ended the consumer"),
            };
            let mut batch = vec![first];
            let mut failed = None;
            // Whatever is there already joins the batch.
            while batch.len() < self.config.batch_size {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(e))) => {
                        failed = Some(e);
                        break;
                    }
                    Some(None) | None => break,
                }
            }
            // Whatever else arrives within the linger joins the batch: a few milliseconds of
            // waiting turn many one-message transactions (a commit and an ack each) into one.
            // (Going at once when only one was waiting was tried: on this machine, where
            // commits are the scarce resource, the extra transactions cost more latency than
            // the linger saved.)
            if failed.is_none() && !self.config.consumer_linger.is_zero() {
                let linger = tokio::time::sleep(self.config.consumer_linger);
                tokio::pin!(linger);
                while batch.len() < self.config.batch_size {
                    let next = tokio::select! {
                        next = consumer.next() => next,
                        () = &mut linger => break,
                    };
                    match next {
                        Some(Ok(delivery)) => batch.push(delivery),
                        Some(Err(e)) => {
                            failed = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
            }
            let settled = batch.len() as u64;
            self.process_batch(&channel, &mut db, batch).await?;
            worked = true;
            if shutdown.is_cancelled() {
                self.drained.fetch_add(settled, Ordering::Relaxed);
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
    }

    async fn process_batch(
        &self,
        channel: &Channel,
        db: &mut KeptConnection,
        batch: Vec<Delivery>,
    ) -> anyhow::Result<()> {
        let Some(last_tag) = batch.last().map(|d| d.delivery_tag) else {
            return Ok(());
        };
        let started = Instant::now();
        self.metrics.batch(batch.len());
        let arrivals = batch
            .into_iter()
            .map(|d| Arrival {
                properties: d.properties,
                body: d.data,
                routing_key: d.routing_key.to_string(),
            })
            .collect();
        let Settlement {
            mut settled,
            diverted,
        } = self.settle(db, arrivals, None).await?;

        let mut retries = Vec::new();
        for diverted in diverted {
            let routing_key = diverted.routing_key.clone();
            let retried = matches!(diverted.divert, Divert::Retry(_));
            let queue = self.publish_diverted(channel, diverted).await?;
            if retried {
                settled.push((routing_key.clone(), Outcome::Retried));
                retries.push((routing_key, queue));
            } else {
                settled.push((routing_key, Outcome::DeadLettered));
            }
        }

        // After the commit and after every diverted copy was confirmed: one ack for the batch.
        // The batches of a channel run one after another, so `multiple` acknowledges exactly
        // this batch (AMQP 0-9-1 basic.ack, multiple = true).
        channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        let elapsed = started.elapsed();
        let queue = self.names.queue(&self.service);
        for (routing_key, outcome) in &settled {
            let label = self.subscriptions.metric_key(routing_key);
            self.metrics
                .delivery_settled(&queue, label, *outcome, elapsed);
        }
        for (routing_key, retry_queue) in &retries {
            let label = self.subscriptions.metric_key(routing_key);
            self.metrics.retry_scheduled(label, retry_queue);
        }
        Ok(())
    }
}
