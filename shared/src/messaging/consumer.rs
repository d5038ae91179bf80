//! Consuming events with exactly-once effects: decode, de-duplicate in the inbox, apply the
//! handler in the same transaction, commit, and only then acknowledge.
//!
//! A service registers one handler per event type in [`Subscriptions`]; the queue's bindings
//! are derived from that list, so a routing key is never typed twice. Each consumer channel
//! runs its batches one after another:
//!
//! 1. take the deliveries that are ready (up to `batch_size`);
//! 2. decode each by its `type` property; what cannot be decoded goes to the DLQ at once;
//! 3. in ONE transaction: insert every `(consumer, message_id)` into the inbox (a conflict
//!    means already applied: skipped), run the handlers, which write their effects and stage
//!    their events through the same transaction, commit;
//! 4. acknowledge the whole batch with one multiple-ack, after the commit.
//!
//! If a handler fails, the batch transaction is rolled back and its messages are applied one
//! per transaction, so one failure never takes its neighbours down. A transient failure is
//! republished to a retry queue (the TTL brings it back after the backoff); a permanent one,
//! or the last attempt, goes to `<queue>.dlq` with `x-death-reason`. Those copies are
//! confirmed by the broker before the original is acknowledged: nothing is dropped.
//!
//! A failure of the database or the broker itself ends the session without acknowledging:
//! the broker redelivers, the inbox absorbs what was already applied.
//!
//! Every settled delivery is timed into `messaging_process_duration_seconds` with its outcome
//! (applied, duplicate, retried, dead-lettered), from the start of its batch to the ack; the
//! session also samples the depth of the service's dead-letter queue.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer as AmqpConsumer};
use shop_proto::Event;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::envelope::{self, DecodeError, Envelope, EventContext, IncomingMeta};
use super::link::{Link, note_generation};
use super::outbox::OutboxWaker;
use super::{Names, connection, outbox, quarantine, topology};
use crate::config::MessagingConfig;
use crate::input;
use crate::metrics::{Metrics, Outcome};
use crate::telemetry::propagation::{TraceFields, continue_trace};
use tracing::Instrument as _;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again later (a lock timeout, a dependency down): retried with backoff.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (an invalid payload): dead-lettered at once.
    #[error("permanent failure: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    /// A permanent failure with a message.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self::Permanent(anyhow::anyhow!("{message}"))
    }

    /// A transient failure with a message.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Self::Transient(anyhow::anyhow!("{message}"))
    }
}

impl From<sqlx::Error> for HandlerError {
    /// Database errors inside a handler are transient: the message is tried again. Kept as
    /// sqlx's own line: it already says what its source says, which `{:#}` would repeat.
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(anyhow::anyhow!("{e}"))
    }
}

/// What a handler gets besides the event: the transaction, the message's metadata, and the
/// state its batch loaded (`S`, see [`BatchState`]; `()` for handlers that need none).
#[derive(Debug)]
pub struct HandlerContext<'c, S = ()> {
    conn: &'c mut PgConnection,
    meta: &'c IncomingMeta,
    staged: &'c mut Vec<Envelope>,
    counted: &'c mut Vec<&'static str>,
    state: &'c mut S,
}

impl<S> HandlerContext<'_, S> {
    /// The transaction the handler's effects belong to; it commits before the ack.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
    }

    /// Adds one to the service's counter `name` once the batch has committed (nothing if it
    /// rolls back): a count of effects, not of attempts.
    pub fn count(&mut self, name: &'static str) {
        self.counted.push(name);
    }

    /// The state the batch loaded before its first message, as the messages before this one
    /// left it; what the handlers leave in it is stored before the commit.
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// The message's id, type, correlation id and trace context.
    pub fn meta(&self) -> &IncomingMeta {
        self.meta
    }

    /// The context for events caused by this message: same flow, caused by it, and the
    /// trace context of the handler's consumer span, so the next hop continues this trace.
    pub fn child_context(&self) -> EventContext {
        let mut context = self.meta.child_context();
        let trace = TraceFields::current();
        if trace.traceparent.is_some() {
            context.traceparent = trace.traceparent;
            context.tracestate = trace.tracestate;
        }
        context
    }

    /// Stages an event caused by this message in the handler's transaction; returns its
    /// message id. The consumer writes the outbox rows of a whole batch in one statement just
    /// before the commit, so they commit with the handler's effects or not at all.
    pub fn stage<E: Event>(&mut self, event: &E) -> String {
        let envelope = Envelope::new(event, "", &self.child_context());
        let id = envelope.message_id.clone();
        self.staged.push(envelope);
        id
    }
}

/// A handler of one event type, working on its batch's state `S` (none by default).
#[async_trait::async_trait]
pub trait Handle<E: Event, S: Send + Sync + 'static = ()>: Send + Sync + 'static {
    /// Applies `event`. Everything it writes goes through `cx.conn()` or `cx.state()`, so it
    /// commits with the inbox row or not at all.
    async fn handle(&self, event: &E, cx: &mut HandlerContext<'_, S>) -> Result<(), HandlerError>;
}

/// The parts of a [`HandlerContext`] before its state is given its type.
struct Parts<'c> {
    conn: &'c mut PgConnection,
    meta: &'c IncomingMeta,
    staged: &'c mut Vec<Envelope>,
    counted: &'c mut Vec<&'static str>,
}

/// A handler with its event and state types erased, so handlers of many types share one
/// table. The state a handler gets is always the one its [`Subscriptions`] loads: both types
/// are fixed together by [`StatefulSubscriptions::on`], so the downcasts cannot fail.
#[async_trait::async_trait]
trait ErasedHandler: Send + Sync {
    fn decode(&self, body: &[u8]) -> Result<Box<dyn Any + Send + Sync>, DecodeError>;
    async fn handle(
        &self,
        event: &(dyn Any + Send + Sync),
        state: &mut (dyn Any + Send + Sync),
        parts: Parts<'_>,
    ) -> Result<(), HandlerError>;
}

struct Typed<E, H, S> {
    handler: Arc<H>,
    _types: std::marker::PhantomData<fn() -> (E, S)>,
}

#[async_trait::async_trait]
impl<E: Event, S: BatchState, H: Handle<E, S>> ErasedHandler for Typed<E, H, S> {
    fn decode(&self, body: &[u8]) -> Result<Box<dyn Any + Send + Sync>, DecodeError> {
        Ok(Box::new(envelope::decode_body::<E>(body)?))
    }

    async fn handle(
        &self,
        event: &(dyn Any + Send + Sync),
        state: &mut (dyn Any + Send + Sync),
        parts: Parts<'_>,
    ) -> Result<(), HandlerError> {
        let event = event
            .downcast_ref::<E>()
            .ok_or_else(|| HandlerError::permanent("decoded event has the wrong type"))?;
        let state = state
            .downcast_mut::<S>()
            .ok_or_else(|| HandlerError::permanent("batch state has the wrong type"))?;
        let mut cx = HandlerContext {
            conn: parts.conn,
            meta: parts.meta,
            staged: parts.staged,
            counted: parts.counted,
            state,
        };
        self.handler.handle(event, &mut cx).await
    }
}

/// The fresh (not yet applied) events of one batch, for [`BatchState::load`].
#[derive(Debug)]
pub struct BatchView<'a> {
    events: Vec<(&'a str, &'a (dyn Any + Send + Sync))>,
}

impl<'a> BatchView<'a> {
    /// The batch's events of type `E`, in delivery order.
    pub fn events<E: Event>(&self) -> impl Iterator<Item = &'a E> + '_ {
        self.events
            .iter()
            .filter(|(type_name, _)| *type_name == E::TYPE_NAME)
            .filter_map(|(_, event)| event.downcast_ref::<E>())
    }
}

/// What a service's handlers decide on, loaded once per batch transaction and stored once.
///
/// [`BatchState::load`] runs after the inbox and before the first handler, with every event
/// the handlers are about to apply: it reads (and locks, in a fixed order, so batches on
/// several channels or replicas wait for each other instead of deadlocking) the rows their
/// decisions need. Each handler then decides on the state in delivery order, as the messages
/// before it left it, and [`BatchState::store`] writes the result before the commit. A batch
/// therefore has exactly the effects of its messages applied one at a time in delivery order
/// (docs/contract.md, "Batches are invisible"), in a few statements instead of a few per
/// message. An error in either is handled like a handler's: the batch rolls back and its
/// messages are applied one per transaction.
#[async_trait::async_trait]
pub trait BatchState: Sized + Send + Sync + 'static {
    /// Loads what the batch's handlers decide on.
    async fn load(conn: &mut PgConnection, batch: &BatchView<'_>) -> Result<Self, HandlerError>;

    /// Writes what the handlers decided, before the commit.
    async fn store(self, conn: &mut PgConnection) -> Result<(), HandlerError>;
}

/// No state: the handlers write through the transaction themselves.
#[async_trait::async_trait]
impl BatchState for () {
    async fn load(_: &mut PgConnection, _: &BatchView<'_>) -> Result<Self, HandlerError> {
        Ok(())
    }

    async fn store(self, _: &mut PgConnection) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A [`BatchState`] with its type erased, beside the handlers that use it.
#[async_trait::async_trait]
trait ErasedState: Send + Sync {
    async fn load(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<Box<dyn Any + Send + Sync>, HandlerError>;
    async fn store(
        &self,
        conn: &mut PgConnection,
        state: Box<dyn Any + Send + Sync>,
    ) -> Result<(), HandlerError>;
}

struct StateOf<S>(std::marker::PhantomData<fn() -> S>);

#[async_trait::async_trait]
impl<S: BatchState> ErasedState for StateOf<S> {
    async fn load(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<Box<dyn Any + Send + Sync>, HandlerError> {
        Ok(Box::new(S::load(conn, batch).await?))
    }

    async fn store(
        &self,
        conn: &mut PgConnection,
        state: Box<dyn Any + Send + Sync>,
    ) -> Result<(), HandlerError> {
        let state = state
            .downcast::<S>()
            .map_err(|_| HandlerError::permanent("batch state has the wrong type"))?;
        state.store(conn).await
    }
}

/// The event types a service consumes, each with its handler, and the state their batches
/// load ([`Subscriptions::with_state`]).
pub struct Subscriptions {
    handlers: HashMap<&'static str, (&'static str, Arc<dyn ErasedHandler>)>,
    state: Arc<dyn ErasedState>,
    /// Routing keys the service consumed before and no longer does (an event's old shape).
    moved_from: Vec<&'static str>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self {
            handlers: HashMap::new(),
            state: Arc::new(StateOf::<()>(std::marker::PhantomData)),
            moved_from: Vec::new(),
        }
    }
}

/// [`Subscriptions`] whose handlers decide on a state `S` their batch loads and stores.
pub struct StatefulSubscriptions<S> {
    subscriptions: Subscriptions,
    _state: std::marker::PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for StatefulSubscriptions<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.subscriptions.fmt(f)
    }
}

impl<S: BatchState> StatefulSubscriptions<S> {
    /// Handles events of type `E` with `handler`, on the batch's `S`; the queue is bound to
    /// `E::ROUTING_KEY`.
    pub fn on<E: Event, H: Handle<E, S>>(mut self, handler: Arc<H>) -> Self {
        self.subscriptions = self.subscriptions.register::<E, H, S>(handler);
        self
    }

    /// See [`Subscriptions::moved_from`].
    pub fn moved_from(mut self, routing_key: &'static str) -> Self {
        self.subscriptions = self.subscriptions.moved_from(routing_key);
        self
    }
}

impl<S> From<StatefulSubscriptions<S>> for Subscriptions {
    fn from(stateful: StatefulSubscriptions<S>) -> Self {
        stateful.subscriptions
    }
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Subscriptions {
    /// No subscriptions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles events of type `E` with `handler`; the queue is bound to `E::ROUTING_KEY`.
    ///
    /// Only an [`Event`] can be subscribed to: a request message has no routing key, so no
    /// queue could be bound for it, and registering a handler for one does not compile.
    ///
    /// ```compile_fail,E0277
    /// use std::sync::Arc;
    ///
    /// use shop_proto::order::v1::CreateOrderRequest;
    /// use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions};
    ///
    /// struct Sneaky;
    ///
    /// #[async_trait::async_trait]
    /// impl Handle<CreateOrderRequest> for Sneaky {
    ///     async fn handle(
    ///         &self,
    ///         _event: &CreateOrderRequest,
    ///         _cx: &mut HandlerContext<'_>,
    ///     ) -> Result<(), HandlerError> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let _ = Subscriptions::new().on::<CreateOrderRequest, _>(Arc::new(Sneaky));
    /// ```
    pub fn on<E: Event, H: Handle<E>>(self, handler: Arc<H>) -> Self {
        self.register::<E, H, ()>(handler)
    }

    /// Subscriptions whose handlers decide on a state `S` that each batch loads before its
    /// first message and stores after its last (see [`BatchState`]).
    pub fn with_state<S: BatchState>() -> StatefulSubscriptions<S> {
        StatefulSubscriptions {
            subscriptions: Self {
                state: Arc::new(StateOf::<S>(std::marker::PhantomData)),
                ..Self::default()
            },
            _state: std::marker::PhantomData,
        }
    }

    fn register<E: Event, H: Handle<E, S>, S: BatchState>(mut self, handler: Arc<H>) -> Self {
        let erased: Arc<dyn ErasedHandler> = Arc::new(Typed::<E, H, S> {
            handler,
            _types: std::marker::PhantomData,
        });
        self.handlers.insert(E::TYPE_NAME, (E::ROUTING_KEY, erased));
        self
    }

    /// The service consumed `routing_key` before and consumes a newer shape of that event now
    /// (e.g. `user.created` → `user.created.v2`): its queue is unbound from the old key at
    /// start-up, so a queue an earlier version declared stops receiving the old shape (whose
    /// type has no handler any more and would be dead-lettered).
    pub fn moved_from(mut self, routing_key: &'static str) -> Self {
        self.moved_from.push(routing_key);
        self
    }

    /// The routing keys to unbind (see [`Subscriptions::moved_from`]).
    pub fn moved_from_keys(&self) -> &[&'static str] {
        &self.moved_from
    }

    /// The routing keys to bind, derived from the handlers.
    pub fn routing_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self.handlers.values().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// `routing_key` as a metric label: one of the subscribed keys, or `other`. A delivery's
    /// key (and its `x-original-routing-key` header) is chosen by whoever published it, and a
    /// label from outside would let a publisher grow `/metrics` without bound.
    pub fn metric_key<'a>(&self, routing_key: &'a str) -> &'a str {
        if self.handlers.values().any(|(key, _)| *key == routing_key) {
            routing_key
        } else {
            OTHER_LABEL
        }
    }
}

/// The metric label of a routing key the consumer does not subscribe to.
pub const OTHER_LABEL: &str = "other";

/// Consumes one service's queue until shutdown, reconnecting after failures.
#[derive(Debug, Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    link: Link,
    names: Names,
    service: String,
    subscriptions: Subscriptions,
    config: MessagingConfig,
    waker: OutboxWaker,
    metrics: Metrics,
    /// Deliveries settled (applied and acked, retried or dead-lettered) by batches that were
    /// in progress when the shutdown signal came.
    drained: AtomicU64,
    /// The generation of the link's connection the last session used.
    generation: AtomicU64,
}

/// A decoded delivery waiting to be applied.
struct Prepared {
    meta: IncomingMeta,
    event: Box<dyn Any + Send + Sync>,
    handler: Arc<dyn ErasedHandler>,
    properties: BasicProperties,
    body: Vec<u8>,
    /// The consumer span: opened when the batch is taken up, ended when the message is
    /// settled (its transaction committed and the batch acknowledged), so it shows what the
    /// message cost this service, not only its handler.
    span: tracing::Span,
}

/// Where a message goes when it is not applied.
enum Divert {
    Retry(Duration),
    DeadLetter(String),
}

/// A message that is not applied: what to send where, and the original routing key.
struct Diverted {
    properties: BasicProperties,
    body: Vec<u8>,
    routing_key: String,
    retry_count: u32,
    divert: Divert,
}

/// A message as it arrived: what the broker delivered, or what a test hands the consumer.
struct Arrival {
    properties: BasicProperties,
    body: Vec<u8>,
    routing_key: String,
}

/// What applying a batch made of each of its messages, before the broker hears of it.
struct Settlement {
    /// (routing key, outcome) of every message settled without a copy sent anywhere.
    settled: Vec<(String, Outcome)>,
    /// The messages to send to a retry queue or the DLQ.
    diverted: Vec<Diverted>,
}

/// Which of a group's messages a committed transaction applied (the others were duplicates).
type Applied = HashSet<String>;

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
        let Settlement { settled, diverted } = self.inner.settle(arrivals, crash_after).await?;
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

    /// Samples the depth of the service's queue and of its dead-letter queue every metrics interval until
    /// `shutdown`, on a channel of its own (a passive declare; each channel it opens is handed
    /// to `keep`). A failed sample is logged at DEBUG and retried on a new channel: it never
    /// ends the session.
    async fn sample_queues(&self, keep: &(dyn Fn(&Channel) + Sync), shutdown: CancellationToken) {
        let dlq = self.names.dlq(&self.service);
        let queue = self.names.queue(&self.service);
        let mut channel: Option<Channel> = None;
        loop {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = self.link.channel().await.ok().map(|leased| leased.channel);
                if let Some(c) = &channel {
                    keep(c);
                }
            }
            if let Some(c) = &channel {
                // The service's own queue: how many messages wait to be delivered.
                let own = c
                    .queue_declare(
                        &queue,
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match own {
                    Ok(q) => self.metrics.queue_sampled(&queue, q.message_count()),
                    Err(e) => {
                        tracing::debug!(queue = %queue, error = %e, "queue sample failed")
                    }
                }
            }
            if let Some(c) = &channel
                && c.status().connected()
            {
                let declared = c
                    .queue_declare(
                        &dlq,
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match declared {
                    Ok(queue) => self
                        .metrics
                        .dead_letters_sampled(&dlq, queue.message_count()),
                    Err(e) => {
                        tracing::debug!(queue = %dlq, error = %e, "dead-letter sample failed")
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.metrics_interval) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn consume_loop(
        self: Arc<Self>,
        channel: Channel,
        mut consumer: AmqpConsumer,
        shutdown: CancellationToken,
    ) -> anyhow::Result<bool> {
        let mut worked = false;
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
            self.process_batch(&channel, batch).await?;
            worked = true;
            if shutdown.is_cancelled() {
                self.drained.fetch_add(settled, Ordering::Relaxed);
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
    }

    async fn process_batch(&self, channel: &Channel, batch: Vec<Delivery>) -> anyhow::Result<()> {
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
        } = self.settle(arrivals, None).await?;

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

    /// Applies a batch in the database: decodes each arrival (what cannot be decoded is
    /// dead-lettered), drops repeats within the batch, applies the rest in one transaction or,
    /// when a handler fails, one per transaction. Returns what became of each; the diverted
    /// copies are not sent yet.
    async fn settle(
        &self,
        batch: Vec<Arrival>,
        crash_after: Option<usize>,
    ) -> anyhow::Result<Settlement> {
        let mut ready = Vec::with_capacity(batch.len());
        let mut diverted: Vec<Diverted> = Vec::new();
        // (routing key, outcome) of every delivery settled without a copy sent anywhere.
        let mut settled: Vec<(String, Outcome)> = Vec::with_capacity(batch.len());
        let mut seen = HashSet::with_capacity(batch.len());
        for arrival in batch {
            match self.prepare(&arrival) {
                Ok(prepared) => {
                    // The same message twice in one batch: the first one counts.
                    if seen.insert(prepared.meta.message_id.clone()) {
                        ready.push(prepared);
                    } else {
                        settled.push((prepared.meta.routing_key, Outcome::Duplicate));
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, routing_key = %arrival.routing_key, "undecodable message dead-lettered");
                    let retry_count = arrival
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| envelope::header_u32(h, envelope::RETRY_COUNT))
                        .unwrap_or(0);
                    diverted.push(Diverted {
                        properties: arrival.properties,
                        body: arrival.body,
                        routing_key: arrival.routing_key,
                        retry_count,
                        divert: Divert::DeadLetter(error.to_string()),
                    });
                }
            }
        }

        let queue = self.names.queue(&self.service);
        let mut record_applied = |group: &[Prepared], applied: &Applied| {
            let now = chrono::Utc::now();
            for prepared in group {
                let outcome = if applied.contains(&prepared.meta.message_id) {
                    // How far behind the consumer is: from the staging of the event to now.
                    if let Some(staged_at) = prepared.meta.staged_at {
                        let lag = (now - staged_at).to_std().unwrap_or_default();
                        let label = self.subscriptions.metric_key(&prepared.meta.routing_key);
                        self.metrics.consumer_lag(&queue, label, lag);
                    }
                    Outcome::Applied
                } else {
                    Outcome::Duplicate
                };
                settled.push((prepared.meta.routing_key.clone(), outcome));
            }
        };
        if !ready.is_empty() {
            match self.apply(&ready, crash_after).await? {
                Ok(applied) => record_applied(&ready, &applied),
                Err(_) if ready.len() > 1 => {
                    // Something in the batch failed: apply each message on its own so only the
                    // failing ones are diverted.
                    for prepared in &ready {
                        match self.apply(std::slice::from_ref(prepared), None).await? {
                            Ok(applied) => record_applied(std::slice::from_ref(prepared), &applied),
                            Err(error) => diverted.push(self.divert(prepared, error)),
                        }
                    }
                }
                Err(error) => diverted.push(self.divert(&ready[0], error)),
            }
        }
        Ok(Settlement { settled, diverted })
    }

    fn prepare(&self, arrival: &Arrival) -> Result<Prepared, DecodeError> {
        let meta = IncomingMeta::read(&arrival.properties, arrival.routing_key.as_str())?;
        let (_, handler) = self
            .subscriptions
            .handlers
            .get(meta.message_type.as_str())
            .ok_or_else(|| DecodeError::UnknownType(meta.message_type.clone()))?;
        let event = handler.decode(&arrival.body)?;
        Ok(Prepared {
            span: self.consumer_span(&meta),
            meta,
            event,
            handler: handler.clone(),
            properties: arrival.properties.clone(),
            body: arrival.body.clone(),
        })
    }

    /// Applies `group` in one transaction and returns the ids it applied (the others were
    /// in the inbox already). The outer `Result` is an infrastructure failure (the session
    /// ends, nothing is acknowledged); the inner one is a handler's.
    ///
    /// `crash_after` (tests only, see [`Consumer::apply_for_test`]) rolls the transaction back
    /// after that many handlers and fails as a crash would.
    async fn apply(
        &self,
        group: &[Prepared],
        crash_after: Option<usize>,
    ) -> anyhow::Result<Result<Applied, HandlerError>> {
        let mut tx = self.pool.begin().await?;
        // Sorted: two transactions inserting the same ids (a redelivery racing its first
        // delivery on another replica) take the index entries in one order and cannot deadlock.
        let mut ids: Vec<&str> = group.iter().map(|p| p.meta.message_id.as_str()).collect();
        ids.sort_unstable();
        // The inbox makes effects exactly-once: a message id already recorded by this consumer
        // was applied by a committed transaction, so it is skipped (and acknowledged).
        let fresh: Applied = sqlx::query_scalar(
            "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::text[]) \
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&self.service)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let batch = BatchView {
            events: group
                .iter()
                .filter(|p| fresh.contains(&p.meta.message_id))
                .map(|p| (p.meta.message_type.as_str(), p.event.as_ref()))
                .collect(),
        };
        let mut state = match self.subscriptions.state.load(&mut tx, &batch).await {
            Ok(state) => state,
            Err(error) => {
                tx.rollback().await?;
                return Ok(Err(error));
            }
        };
        let mut staged: Vec<Envelope> = Vec::new();
        let mut counted: Vec<&'static str> = Vec::new();
        for (applied, prepared) in group
            .iter()
            .filter(|p| fresh.contains(&p.meta.message_id))
            .enumerate()
        {
            if crash_after == Some(applied) {
                tx.rollback().await?;
                anyhow::bail!("crash injected after {applied} handlers");
            }
            let parts = Parts {
                conn: &mut tx,
                meta: &prepared.meta,
                staged: &mut staged,
                counted: &mut counted,
            };
            let span = &prepared.span;
            let handled = prepared
                .handler
                .handle(prepared.event.as_ref(), state.as_mut(), parts)
                .instrument(span.clone())
                .await;
            if let Err(error) = handled {
                span.record("otel.status_code", "ERROR");
                span.record("error.message", tracing::field::display(&error));
                tx.rollback().await?;
                return Ok(Err(error));
            }
        }
        if let Err(error) = self.subscriptions.state.store(&mut tx, state).await {
            tx.rollback().await?;
            return Ok(Err(error));
        }
        outbox::stage_envelopes(&mut tx, &staged).await?;
        tx.commit().await?;
        if !staged.is_empty() {
            self.waker.wake();
        }
        for name in counted {
            self.metrics.count(name);
        }
        Ok(Ok(fresh))
    }

    /// The consumer span of one message: a child of the producer span whose context the
    /// message carries (OpenTelemetry messaging conventions for the attributes).
    fn consumer_span(&self, meta: &IncomingMeta) -> tracing::Span {
        let span = tracing::info_span!(
            "amqp.process",
            otel.name = %format!("{} process", meta.routing_key),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = %self.names.queue(&self.service),
            messaging.rabbitmq.destination.routing_key = %meta.routing_key,
            messaging.message.id = %meta.message_id,
            messaging.message.conversation_id = %meta.correlation_id,
            messaging.consumer.group.name = %self.service,
            shop.retry_count = meta.retry_count,
            shop.service = %self.service,
            trace_id = tracing::field::Empty,
            correlation_id = %meta.correlation_id,
        );
        let remote = TraceFields {
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
        };
        continue_trace(&span, remote.to_context());
        span
    }

    fn divert(&self, prepared: &Prepared, error: HandlerError) -> Diverted {
        let attempt = prepared.meta.retry_count + 1;
        let divert = match &error {
            HandlerError::Permanent(_) => Divert::DeadLetter(error.to_string()),
            HandlerError::Transient(_) => match self.config.retry.delay_after(attempt) {
                Some(delay) => Divert::Retry(delay),
                None => Divert::DeadLetter(format!("{error} (after {attempt} attempts)")),
            },
        };
        tracing::warn!(message_id = %prepared.meta.message_id, attempt, error = %error, "handler failed");
        Diverted {
            properties: prepared.properties.clone(),
            body: prepared.body.clone(),
            routing_key: prepared.meta.routing_key.clone(),
            retry_count: prepared.meta.retry_count,
            divert,
        }
    }

    /// Sends a diverted message's copy to its retry queue or the DLQ and waits for the
    /// broker's confirm; returns the queue.
    async fn publish_diverted(
        &self,
        channel: &Channel,
        diverted: Diverted,
    ) -> anyhow::Result<String> {
        let Diverted {
            properties,
            body,
            routing_key,
            retry_count,
            divert,
        } = diverted;
        let routing_key = routing_key.as_str();
        let (queue, properties) = match divert {
            Divert::Retry(delay) => (
                self.names.retry_queue(&self.service, delay),
                envelope::with_headers(
                    &properties,
                    [
                        (
                            envelope::RETRY_COUNT,
                            AMQPValue::LongInt(retry_count as i32 + 1),
                        ),
                        (
                            envelope::ORIGINAL_ROUTING_KEY,
                            envelope::long_string(routing_key),
                        ),
                    ],
                ),
            ),
            Divert::DeadLetter(reason) => (
                self.names.dlq(&self.service),
                envelope::with_headers(
                    &properties,
                    [
                        (envelope::DEATH_REASON, envelope::long_string(&reason)),
                        (
                            envelope::DEATH_TIME,
                            envelope::long_string(&envelope::rfc3339_now()),
                        ),
                        (
                            envelope::RETRY_COUNT,
                            AMQPValue::LongInt(retry_count as i32),
                        ),
                        (
                            envelope::ORIGINAL_ROUTING_KEY,
                            envelope::long_string(routing_key),
                        ),
                    ],
                ),
            ),
        };
        // Through the default exchange straight to the queue: a retry concerns this service
        // only, not every subscriber of the routing key.
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions {
                    mandatory: false,
                    immediate: false,
                },
                &body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(queue),
            Confirmation::Nack(_) => anyhow::bail!("the broker nacked the copy for {queue}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_is_said_once() {
        let e = HandlerError::from(sqlx::Error::Io(std::io::Error::other("connection lost")));
        let text = e.to_string();
        assert_eq!(text.matches("connection lost").count(), 1, "{text}");
        assert!(text.starts_with("transient failure: "), "{text}");
    }
}
