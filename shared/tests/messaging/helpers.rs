//! A tiny "service" for the tests: a consumer of `order.created` whose handler records an
//! effect row, and can be told to fail by the order id it receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::order::v1::OrderCreated;
use shop_shared::messaging::MessagingConfig;
use shop_shared::messaging::{
    Consumer, EventContext, Handle, HandlerContext, HandlerError, Links, Relay, RelayConfig,
    RetryPolicy, Subscriptions, outbox,
};
use shop_shared::metrics::Metrics;
use shop_shared::testing::{TestBroker, TestDatabase};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub(crate) const SERVICE: &str = "effects";
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Records each applied `OrderCreated` as a row of `effects`; fails on request:
/// order id `transient-<n>-…` fails transiently n times, `permanent-…` always permanently;
/// `held-…` waits until [`Recorder::release`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    attempts: Mutex<HashMap<String, Vec<Instant>>>,
    released: std::sync::atomic::AtomicBool,
}

impl Recorder {
    /// Lets the `held-…` orders through.
    pub(crate) fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn attempts(&self, order_id: &str) -> Vec<Instant> {
        self.attempts
            .lock()
            .unwrap()
            .get(order_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Handle<OrderCreated> for Recorder {
    async fn handle(
        &self,
        event: &OrderCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let list = attempts.entry(event.order_id.clone()).or_default();
            list.push(Instant::now());
            list.len()
        };
        if event.order_id.starts_with("held-") {
            while !self.released.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if event.order_id.starts_with("permanent-") {
            return Err(HandlerError::permanent("this order can never be applied"));
        }
        if let Some(rest) = event.order_id.strip_prefix("transient-") {
            let failures: usize = rest.split('-').next().unwrap().parse().unwrap();
            if attempt <= failures {
                return Err(HandlerError::transient(format!("attempt {attempt} fails")));
            }
        }
        let message_id = cx.meta().message_id.clone();
        sqlx::query("INSERT INTO effects (order_id, message_id) VALUES ($1, $2)")
            .bind(&event.order_id)
            .bind(message_id)
            .execute(cx.conn())
            .await?;
        Ok(())
    }
}

/// A database, a prefix, a recorder, and a running consumer and relay.
pub(crate) struct Harness {
    pub(crate) broker: TestBroker,
    pub(crate) pool: PgPool,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) config: MessagingConfig,
    pub(crate) shutdown: CancellationToken,
    /// What the consumer and the relay count.
    pub(crate) metrics: Metrics,
    /// The two broker connections every consumer and relay of the harness shares.
    pub(crate) links: Links,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
    _db: TestDatabase,
}

pub(crate) fn fast_config() -> MessagingConfig {
    MessagingConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            factor: 3,
            max_attempts: 3,
        },
        outbox_poll: Duration::from_millis(200),
        metrics_interval: Duration::from_millis(100),
        ..MessagingConfig::default()
    }
}

impl Harness {
    /// Database and broker prefix only; nothing running.
    pub(crate) async fn idle(config: MessagingConfig) -> Self {
        let (db, pool) = TestDatabase::migrated(None).await;
        sqlx::query(
            "CREATE TABLE effects (order_id TEXT NOT NULL, message_id TEXT NOT NULL, \
             at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), \
             backend INT NOT NULL DEFAULT pg_backend_pid())",
        )
        .execute(&pool)
        .await
        .unwrap();
        let broker = TestBroker::new();
        broker.track_service(SERVICE, &config.retry);
        Self {
            links: Links::new(&broker.url, &broker.names, SERVICE),
            broker,
            pool,
            recorder: Arc::new(Recorder::default()),
            config,
            shutdown: CancellationToken::new(),
            metrics: Metrics::new(SERVICE),
            tasks: Vec::new(),
            _db: db,
        }
    }

    /// Database, prefix, a consumer and a relay running.
    pub(crate) async fn start(config: MessagingConfig) -> Self {
        let mut h = Self::idle(config).await;
        let consumer = h.consumer();
        consumer.declare().await.expect("declare the topology");
        h.tasks.push(tokio::spawn(consumer.run(h.shutdown.clone())));
        h.spawn_relay();
        h
    }

    pub(crate) fn consumer(&self) -> Consumer {
        Consumer::new(
            self.pool.clone(),
            self.links.consume.clone(),
            self.broker.names.clone(),
            SERVICE,
            Subscriptions::new().on::<OrderCreated, _>(self.recorder.clone()),
            self.config.clone(),
        )
        .with_metrics(self.metrics.clone())
    }

    pub(crate) fn relay(&self) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.links.publish.clone(),
            self.broker.names.clone(),
            "test",
            RelayConfig::from(&self.config),
        )
        .with_metrics(self.metrics.clone())
    }

    /// Runs `consumer` (declared first) until the harness stops.
    pub(crate) async fn spawn_consumer(&mut self, consumer: Consumer) {
        consumer.declare().await.expect("declare the topology");
        self.tasks
            .push(tokio::spawn(consumer.run(self.shutdown.clone())));
    }

    pub(crate) fn spawn_relay(&mut self) {
        let relay = self.relay();
        self.tasks
            .push(tokio::spawn(relay.run(self.shutdown.clone())));
    }

    /// Runs a relay that takes what `waker` hands over (its fast path).
    pub(crate) fn spawn_relay_with(&mut self, waker: &shop_shared::messaging::OutboxWaker) {
        let relay = self.relay().with_waker(waker.clone());
        self.tasks
            .push(tokio::spawn(relay.run(self.shutdown.clone())));
    }

    /// Stages `OrderCreated { order_id }` in its own committed transaction.
    pub(crate) async fn stage(&self, order_id: &str) -> String {
        let mut tx = self.pool.begin().await.unwrap();
        let id = outbox::stage(
            &mut tx,
            &order(order_id),
            &EventContext::with_correlation_id(format!("corr-{order_id}")),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id.to_string()
    }

    pub(crate) async fn effects(&self, order_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn total_effects(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn unpublished(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Stops the consumers and relays; the database stays, to be looked at. Returns what each
    /// task reported (a relay: the rows it drained after the signal).
    pub(crate) async fn stop_tasks(&mut self) -> Vec<u64> {
        self.shutdown.cancel();
        let mut reported = Vec::new();
        for task in self.tasks.drain(..) {
            let report = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("tasks stop within the deadline")
                .unwrap();
            reported.push(report);
        }
        reported
    }

    pub(crate) async fn stop(mut self) {
        self.stop_tasks().await;
        self.links.close("test done").await;
    }
}

pub(crate) fn order(order_id: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.to_owned(),
        customer_id: "c-1".to_owned(),
        total_cents: 1234,
        ..OrderCreated::default()
    }
}

/// Publishes raw messages on the test's exchange (as a misbehaving or duplicate producer
/// would), waiting for the broker's confirms.
pub(crate) async fn publish_raw(
    broker: &TestBroker,
    messages: &[(&str, lapin::BasicProperties, Vec<u8>)],
) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("raw-publisher").await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (key, properties, body) in messages {
        channel
            .basic_publish(
                &broker.names.exchange(),
                key,
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    conn.close(200, "done").await.unwrap();
}

/// A TCP proxy in front of the broker that can stop passing bytes while keeping the
/// connections open: a broker that takes publishes and never confirms them, as one under a
/// resource alarm or without a quorum does.
pub(crate) struct SilentProxy {
    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`, through the proxy.
    pub(crate) url: String,
    silent: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled to drop every connection made so far.
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl SilentProxy {
    /// A proxy to the broker of `AMQP_URL` (127.0.0.1:5672), passing bytes.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (s, g, st) = (silent.clone(), generation.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = st.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let Ok(broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    continue;
                };
                let dropped = g.lock().unwrap().clone();
                let silent = s.clone();
                tokio::spawn(async move {
                    let (cr, cw) = client.into_split();
                    let (br, bw) = broker.into_split();
                    tokio::select! {
                        _ = pass(cr, bw, silent.clone()) => {}
                        _ = pass(br, cw, silent) => {}
                        () = dropped.cancelled() => {}
                    }
                });
            }
        });
        Self {
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            silent,
            generation,
            stop,
        }
    }

    /// Swallows every byte from now on, both ways.
    pub(crate) fn go_silent(&self) {
        self.silent.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops the silenced connections and passes bytes again for new ones.
    pub(crate) fn speak_again(&self) {
        let mut generation = self.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
        self.silent
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes; swallows the bytes while `silent`.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Silent: the bytes are swallowed, the connection stays.
        if !silent.load(std::sync::atomic::Ordering::SeqCst) {
            to.write_all(&buf[..n]).await?;
        }
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().unwrap().cancel();
    }
}
