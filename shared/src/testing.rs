//! Test helpers (feature `test-util`): a fresh database per test, a random broker prefix per
//! test, a probe queue that reads events off the exchange, and `eventually` for asynchronous
//! outcomes. Everything a test creates is removed when its guard drops.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use shop_proto::Event;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::messaging::{IncomingMeta, Names, RetryPolicy, connection, envelope, topology};

/// The PostgreSQL server tests use: `TEST_DATABASE_URL`, else `DATABASE_URL`, else the local
/// default. Only the server part matters: every test gets its own database on it.
pub fn database_server_url() -> String {
    crate::config::env_var("TEST_DATABASE_URL")
        .or_else(|| crate::config::env_var("DATABASE_URL"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The broker tests use: `AMQP_URL` or the local default.
pub fn amqp_url() -> String {
    crate::config::env_var("AMQP_URL").unwrap_or_else(|| crate::config::DEFAULT_AMQP_URL.into())
}

/// A database of its own for one test, dropped (with its connections) when the guard drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    /// The database's name.
    pub name: String,
    server: String,
}

impl TestDatabase {
    /// Creates an empty database with a random name.
    pub async fn create() -> Self {
        let server = database_server_url();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&server, &name);
        crate::db::create_database_if_missing(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database on {server}: {e:#} (is PostgreSQL running? set TEST_DATABASE_URL)"));
        Self { url, name, server }
    }

    /// Creates a database with the messaging tables and `service`'s migrations, and a pool.
    pub async fn migrated(service: Option<&Migrator>) -> (Self, PgPool) {
        let db = Self::create().await;
        let pool = crate::db::connect(&db.url, 10)
            .await
            .expect("connect to the test database");
        match service {
            Some(m) => crate::db::migrate(&pool, m).await,
            None => crate::db::migrate(&pool, &Migrator::DEFAULT).await,
        }
        .expect("migrate the test database");
        (db, pool)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::{ConnectOptions as _, Connection as _};
                let Ok(options) = server.parse::<sqlx::postgres::PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = options.database("postgres").connect().await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(&sql).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Replaces the database of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

/// A random broker prefix for one test; its exchange and the queues it registered are
/// deleted when the guard drops.
#[derive(Debug)]
pub struct TestBroker {
    /// The broker URL.
    pub url: String,
    /// Names under this test's prefix.
    pub names: Names,
    queues: std::sync::Mutex<Vec<String>>,
}

impl TestBroker {
    /// A fresh prefix like `t3f9a…_`.
    pub fn new() -> Self {
        let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            url: amqp_url(),
            names: Names::new(prefix),
            queues: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A fresh prefix on the broker at `url` (one URL or a cluster's nodes, comma-separated)
    /// instead of `AMQP_URL`.
    pub fn with_url(url: impl Into<String>) -> Self {
        let mut broker = Self::new();
        broker.url = url.into();
        broker
    }

    /// Remembers `service`'s queues (main, DLQ, retry queues of `retry`) for the cleanup.
    pub fn track_service(&self, service: &str, retry: &RetryPolicy) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.push(self.names.queue(service));
        queues.push(self.names.dlq(service));
        for delay in retry.delays() {
            queues.push(self.names.retry_queue(service, delay));
        }
    }

    /// Remembers a queue a test (or a process it started) declared, for the cleanup.
    pub fn track_queue(&self, queue: impl Into<String>) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(queue.into());
    }

    /// Opens a connection named with this test's prefix.
    pub async fn connect(&self, role: &str) -> Connection {
        let name = self.names.connection_name("test", role);
        connection::connect(&self.url, &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to RabbitMQ at {}: {e} (set AMQP_URL)",
                    self.url
                )
            })
    }

    /// The names of the open connections whose name carries this test's prefix, sorted, as
    /// the broker lists them (`rabbitmqctl list_connections`).
    pub fn own_connection_names(&self) -> Vec<String> {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "client_properties",
            ])
            .output()
            .expect("run rabbitmqctl list_connections");
        let listing = String::from_utf8_lossy(&out.stdout);
        let marker = "{\"connection_name\",\"";
        let mut names: Vec<String> = listing
            .lines()
            .filter_map(|line| {
                let start = line.find(marker)? + marker.len();
                let name = &line[start..];
                Some(name[..name.find('"')?].to_owned())
            })
            .filter(|name| name.starts_with(&self.names.prefix))
            .collect();
        names.sort();
        names
    }

    /// The routing keys `queue` is bound with on the test's exchange (`rabbitmqctl
    /// list_bindings`), sorted.
    pub fn bindings_of(&self, queue: &str) -> Vec<String> {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_bindings",
                "-q",
                "--no-table-headers",
                "source_name",
                "destination_name",
                "routing_key",
            ])
            .output()
            .expect("run rabbitmqctl list_bindings");
        let exchange = self.names.exchange();
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut columns = line.split('\t');
                let (source, destination, key) =
                    (columns.next()?, columns.next()?, columns.next()?);
                (source == exchange && destination == queue).then(|| key.to_owned())
            })
            .collect();
        keys.sort();
        keys
    }

    /// Closes, from the broker's side, every connection whose name carries this test's
    /// prefix (never anyone else's: tests run in parallel). Returns how many were closed.
    pub fn close_own_connections(&self) -> usize {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("run rabbitmqctl list_connections");
        let listing = String::from_utf8_lossy(&out.stdout);
        let mut closed = 0;
        for line in listing.lines() {
            if !line.contains(&format!("\"{}", self.names.prefix)) {
                continue;
            }
            let Some(pid) = line.split_whitespace().next() else {
                continue;
            };
            let status = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a test"])
                .status()
                .expect("run rabbitmqctl close_connection");
            if status.success() {
                closed += 1;
            }
        }
        closed
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let url = self.url.clone();
        let exchange = self.names.exchange();
        let mut queues =
            std::mem::take(&mut *self.queues.lock().unwrap_or_else(|p| p.into_inner()));
        // Every service declares every consumer's queue: they are this prefix's too.
        for consumer in crate::messaging::topology::CONSUMERS {
            queues.push(self.names.queue(consumer.service));
            queues.push(self.names.dlq(consumer.service));
        }
        queues.sort_unstable();
        queues.dedup();
        let name = self.names.connection_name("test", "cleanup");
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(conn) = connection::connect(&url, &name).await else {
                    return;
                };
                if let Ok(channel) = conn.create_channel().await {
                    for queue in &queues {
                        let _ = channel
                            .queue_delete(queue, QueueDeleteOptions::default())
                            .await;
                    }
                    let _ = channel
                        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                        .await;
                    let _ = channel.close(200, "cleanup").await;
                }
                let _ = conn.close(200, "cleanup").await;
            });
        })
        .join();
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// A message read off the broker by a probe.
#[derive(Debug, Clone)]
pub struct Received {
    /// The routing key it arrived with.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
}

impl Received {
    /// The contract metadata of the message.
    pub fn meta(&self) -> IncomingMeta {
        IncomingMeta::read(&self.properties, &self.routing_key).expect("a well-formed event")
    }

    /// A header as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| envelope::header_str(h, key))
    }

    /// Decodes the message as `E`, checking its type.
    pub fn decode<E: Event>(&self) -> E {
        envelope::decode::<E>(&self.properties, &self.body).expect("decodes as the expected event")
    }

    /// The same message again, as `app_id` would publish it a second time: its message id,
    /// type, routing key, body, correlation and trace context (a duplicate delivery).
    pub fn redelivery(&self, app_id: &str) -> crate::messaging::Envelope {
        let meta = self.meta();
        crate::messaging::Envelope {
            message_id: meta.message_id,
            message_type: meta.message_type,
            routing_key: self.routing_key.clone(),
            payload: self.body.clone(),
            app_id: app_id.into(),
            correlation_id: meta.correlation_id,
            causation_id: None,
            actor_id: None,
            traceparent: meta.traceparent,
            tracestate: meta.tracestate,
            subject: String::new(),
            staged_at: None,
        }
    }
}

/// An exclusive queue bound to the test's exchange (or any queue) that a test reads from.
#[derive(Debug)]
pub struct EventProbe {
    _conn: Connection,
    consumer: lapin::Consumer,
}

impl EventProbe {
    /// A probe of every event published on the test's exchange with one of `keys`
    /// (`#` for all).
    pub async fn bind(broker: &TestBroker, keys: &[&str]) -> Self {
        let conn = broker.connect("probe").await;
        let channel = conn.create_channel().await.expect("probe channel");
        topology::declare_exchange(&channel, &broker.names)
            .await
            .expect("declare the exchange");
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the probe queue");
        for key in keys {
            channel
                .queue_bind(
                    queue.name().as_str(),
                    &broker.names.exchange(),
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the probe");
        }
        Self::consume(conn, channel, queue.name().as_str()).await
    }

    /// A probe reading an existing queue (a DLQ, say).
    pub async fn queue(broker: &TestBroker, queue: &str) -> Self {
        let conn = broker.connect("probe").await;
        let channel = conn.create_channel().await.expect("probe channel");
        Self::consume(conn, channel, queue).await
    }

    async fn consume(conn: Connection, channel: lapin::Channel, queue: &str) -> Self {
        let consumer = channel
            .basic_consume(
                queue,
                "probe",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume the probe queue");
        Self {
            _conn: conn,
            consumer,
        }
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        Some(Received {
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties,
            body: delivery.data,
        })
    }

    /// The next message, or a panic naming `what` after `timeout`.
    pub async fn expect(&mut self, timeout: Duration, what: &str) -> Received {
        self.next(timeout)
            .await
            .unwrap_or_else(|| panic!("no message within {timeout:?}: expected {what}"))
    }

    /// The next message of type `E` (others are skipped), decoded.
    pub async fn expect_event<E: Event>(&mut self, timeout: Duration) -> (E, Received) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self.expect(left, E::TYPE_NAME).await;
            if received.properties.kind().as_ref().map(|k| k.as_str()) == Some(E::TYPE_NAME) {
                return (received.decode::<E>(), received);
            }
        }
    }
}

/// What one service under test owns: a fresh database and a broker prefix of its own.
#[derive(Debug)]
pub struct TestEnv {
    /// The service's database.
    pub database: TestDatabase,
    /// The service's broker prefix.
    pub broker: TestBroker,
}

impl TestEnv {
    /// A fresh database and prefix (and the test log subscriber).
    pub async fn new() -> Self {
        init_logs();
        Self {
            database: TestDatabase::create().await,
            broker: TestBroker::new(),
        }
    }

    /// The settings of service `name` on this environment (see [`service_config`]).
    pub fn config(&self, name: &'static str) -> crate::service::ServiceConfig {
        service_config(name, &self.database, &self.broker)
    }
}

/// A task that runs until this guard drops: its shutdown token is then cancelled.
#[derive(Debug)]
pub struct RunningUntilDropped(tokio_util::sync::CancellationToken);

impl Drop for RunningUntilDropped {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Spawns `run` (e.g. `|s| app.run_until_stopped(s)`) with a shutdown token that is
/// cancelled when the returned guard drops.
pub fn run_until_dropped<F>(
    run: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> RunningUntilDropped
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(run(shutdown.clone()));
    RunningUntilDropped(shutdown)
}

/// Settings for a service under test: port 0 on localhost, the test's database and broker
/// prefix, quick retries and polling.
pub fn service_config(
    name: &'static str,
    database: &TestDatabase,
    broker: &TestBroker,
) -> crate::service::ServiceConfig {
    let messaging = crate::config::MessagingConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            factor: 2,
            max_attempts: 3,
        },
        outbox_poll: Duration::from_millis(200),
        // Tests read the sampled gauges: sample often.
        metrics_interval: Duration::from_millis(100),
        ..crate::config::MessagingConfig::default()
    };
    broker.track_service(name, &messaging.retry);
    crate::service::ServiceConfig {
        name,
        grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: database.url.clone(),
        pool_size: 8,
        amqp: crate::config::AmqpConfig {
            url: broker.url.clone(),
            prefix: broker.names.prefix.clone(),
        },
        messaging,
        auth: crate::config::AuthConfig::default(),
        shared_links: None,
    }
}

/// A stand-in for the user service's token issuer, for testing one service alone: a signing
/// key whose JWK Set is served over real HTTP on a port of its own (the path every verifying
/// service takes in production), and tokens for any caller.
#[derive(Debug)]
pub struct TestIssuer {
    key: crate::auth::SigningKey,
    url: String,
    _server: RunningUntilDropped,
}

impl TestIssuer {
    /// A fresh key, published at [`TestIssuer::jwks_url`].
    pub async fn start() -> Self {
        let key = crate::auth::SigningKey::generate().expect("generate a signing key");
        let set = crate::auth::JwkSet {
            keys: vec![key.public_jwk().clone()],
        };
        let router = axum::Router::new().route(
            crate::http::JWKS_PATH,
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the test JWKS port");
        let url = format!(
            "http://{}{}",
            listener.local_addr().expect("an address"),
            crate::http::JWKS_PATH
        );
        let server = run_until_dropped(|s| crate::http::serve("test-issuer", listener, router, s));
        Self {
            key,
            url,
            _server: server,
        }
    }

    /// Where the JWK Set is served.
    pub fn jwks_url(&self) -> &str {
        &self.url
    }

    /// The signing key (for forging variants of a token in tests).
    pub fn key(&self) -> &crate::auth::SigningKey {
        &self.key
    }

    /// A valid token for `user_id` with `role`.
    pub fn token(&self, user_id: uuid::Uuid, role: crate::auth::Role) -> String {
        let claims = crate::auth::Claims::new(user_id, role, chrono::Utc::now().timestamp(), 900);
        self.key.sign(&claims).expect("sign a test token")
    }

    /// A staff token for a random staff member.
    pub fn staff(&self) -> String {
        self.token(uuid::Uuid::now_v7(), crate::auth::Role::Staff)
    }

    /// A customer token for `user_id`.
    pub fn customer(&self, user_id: uuid::Uuid) -> String {
        self.token(user_id, crate::auth::Role::Customer)
    }
}

/// Where [`free_port`] takes ports from: below the kernel's ephemeral range
/// (`ip_local_port_range`, from 32768 here), so no outgoing connection and no `bind(0)` on the
/// machine is ever handed one, also while a service a test killed is down and its port free.
/// Clear of the test cluster's ports (5681-5683, 25681-25683).
const SERVICE_PORTS: std::ops::Range<u16> = 20_000..25_000;

/// A port for a service process a test starts: in [`SERVICE_PORTS`], free now, and never
/// handed out before by this process. Binding port 0 and releasing it is not enough: the
/// kernel may hand the same port out again before the first service has bound it (8 such
/// ports in a row held a duplicate in 10 of 3,000 tries), and the second service then fails
/// to start.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u32::from(SERVICE_PORTS.end - SERVICE_PORTS.start);
    for _ in 0..1000 {
        let random = uuid::Uuid::new_v4().as_u128() as u32;
        let port = SERVICE_PORTS.start + (random % span) as u16;
        if handed_out.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.push(port);
        return port;
    }
    panic!("no free port in {SERVICE_PORTS:?}")
}

/// `request` with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    crate::auth::client::with_bearer(tonic::Request::new(message), token).expect("a token is ASCII")
}

/// Connects a tonic channel to a service under test.
pub async fn grpc_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid endpoint")
        .connect()
        .await
        .expect("connect to the service under test")
}

/// Publishes `event` on the test's exchange as a service would (every contract property,
/// confirmed by the broker). Returns its message id.
pub async fn publish<E: Event>(broker: &TestBroker, event: &E) -> String {
    let envelope =
        crate::messaging::Envelope::new(event, "test", &crate::messaging::EventContext::new_flow());
    publish_envelope(broker, &envelope).await;
    envelope.message_id
}

/// Publishes a prepared envelope on the test's exchange, confirmed by the broker.
pub async fn publish_envelope(broker: &TestBroker, envelope: &crate::messaging::Envelope) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("publisher").await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    topology::declare_exchange(&channel, &broker.names)
        .await
        .expect("declare the exchange");
    let confirm = channel
        .basic_publish(
            &broker.names.exchange(),
            &envelope.routing_key,
            BasicPublishOptions::default(),
            &envelope.payload,
            envelope.properties(chrono::Utc::now().timestamp().max(0) as u64),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker confirmed the test event");
    let _ = conn.close(200, "published").await;
}

/// Places `envelope` in `service`'s dead-letter queue as the consumer dead-letters a message
/// (the copy of the original with `x-death-reason`, `x-death-time`, `x-retry-count` and
/// `x-original-routing-key`), plus `extra` headers, confirmed by the broker.
pub async fn place_dead_letter(
    broker: &TestBroker,
    service: &str,
    envelope: &crate::messaging::Envelope,
    reason: &str,
    extra: &[(&'static str, lapin::types::AMQPValue)],
) {
    use crate::messaging::envelope as e;
    place_in_queue(
        broker,
        &broker.names.dlq(service),
        &envelope.payload,
        e::with_headers(
            &envelope.properties(chrono::Utc::now().timestamp().max(0) as u64),
            [
                (e::DEATH_REASON, e::long_string(reason)),
                (e::DEATH_TIME, e::long_string(&e::rfc3339_now())),
                (e::RETRY_COUNT, lapin::types::AMQPValue::LongInt(5)),
                (
                    e::ORIGINAL_ROUTING_KEY,
                    e::long_string(&envelope.routing_key),
                ),
            ]
            .into_iter()
            .chain(extra.iter().cloned()),
        ),
    )
    .await;
}

/// Publishes `body` with `properties` straight to `queue` (default exchange), confirmed.
pub async fn place_in_queue(
    broker: &TestBroker,
    queue: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("placer").await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            properties.with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirm, lapin::publisher_confirm::Confirmation::Ack(None)),
        "the broker routed the message to {queue}: {confirm:?}"
    );
    let _ = conn.close(200, "placed").await;
}

/// Installs a log subscriber once per test binary: silent unless `TEST_LOG` is set (then
/// `RUST_LOG` or `info`, to stderr). Trace context still propagates (W3C propagator).
pub fn init_logs() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(
            crate::telemetry::w3c::LenientTraceContextPropagator::new(),
        );
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Every kind of `authorization` value docs/contract.md says is refused with UNAUTHENTICATED,
/// labelled, made against `key` (the real signing key, so that only the named defect is
/// wrong): none at all, `Basic`, garbage, `alg: none`, HS256 keyed with the public key,
/// another key claiming `key`'s `kid`, a payload swapped under a good signature, an expired
/// token, a wrong `iss` and a wrong `aud`. Each would otherwise act as staff `sub`.
pub fn refused_authorizations(
    key: &crate::auth::SigningKey,
    sub: uuid::Uuid,
) -> Vec<(&'static str, Option<String>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    let now = chrono::Utc::now().timestamp();
    let staff = crate::auth::Claims::new(sub, crate::auth::Role::Staff, now, 900);
    let good = key.sign(&staff).expect("sign");
    let header = |alg| Header {
        kid: Some(key.kid().to_owned()),
        ..Header::new(alg)
    };
    let json = |v: &dyn erased_json::Json| B64.encode(v.to_vec());
    let none = format!(
        "{}.{}.",
        B64.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        )),
        json(&staff)
    );
    let public = serde_json::to_vec(key.public_jwk()).expect("jwk");
    let hs256 = jsonwebtoken::encode(
        &header(Algorithm::HS256),
        &staff,
        &EncodingKey::from_secret(&public),
    )
    .expect("sign hs256");
    let impostor = crate::auth::SigningKey::generate().expect("key");
    let same_kid = jsonwebtoken::encode(
        &header(Algorithm::ES256),
        &staff,
        &EncodingKey::from_ec_der(impostor.pkcs8_der()),
    )
    .expect("sign");
    let customer = crate::auth::Claims::new(sub, crate::auth::Role::Customer, now, 900);
    let signed_customer = key.sign(&customer).expect("sign");
    let mut parts: Vec<String> = signed_customer.split('.').map(str::to_owned).collect();
    parts[1] = json(&staff);
    let tampered = parts.join(".");
    let expired = key
        .sign(&crate::auth::Claims::new(
            sub,
            crate::auth::Role::Staff,
            now - 1000,
            900,
        ))
        .expect("sign");
    let mut wrong_iss = staff.clone();
    wrong_iss.iss = "not-shop".into();
    let mut wrong_aud = staff.clone();
    wrong_aud.aud = "not-shop".into();
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    vec![
        ("no token", None),
        ("Basic", Some(format!("Basic {good}"))),
        ("garbage", bearer("garbage.garbage.garbage")),
        ("alg none", bearer(&none)),
        ("HS256 with the public key", bearer(&hs256)),
        ("another key with the same kid", bearer(&same_kid)),
        ("tampered payload", bearer(&tampered)),
        ("expired", bearer(&expired)),
        ("wrong iss", bearer(&key.sign(&wrong_iss).expect("sign"))),
        ("wrong aud", bearer(&key.sign(&wrong_aud).expect("sign"))),
    ]
}

/// `message` with the raw `authorization` value (or none).
pub fn with_authorization<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization
        && let Ok(value) = value.parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

mod erased_json {
    /// Anything serialisable, as JSON bytes (keeps the helper above short).
    pub(super) trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("serialisable")
        }
    }
}

/// One series of a Prometheus text exposition: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric name (with `_bucket`, `_count`, `_sum` for a histogram's parts).
    pub name: String,
    /// The labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Parses the series of a Prometheus text exposition (comments skipped). Panics on a line
/// that is not a series: the text under test must be well formed.
pub fn parse_metrics(text: &str) -> Vec<Series> {
    let mut series = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => panic!("not a series: {line}"),
        };
        let mut labels = Vec::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let Some((i, c)) = chars.next() else {
                    panic!("unterminated labels: {line}")
                };
                match c {
                    '}' => break i,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next() {
                                Some((_, '"')) => break,
                                Some((_, '\\')) => match chars.next() {
                                    Some((_, 'n')) => value.push('\n'),
                                    Some((_, c)) => value.push(c),
                                    None => panic!("bad escape: {line}"),
                                },
                                Some((_, c)) => value.push(c),
                                None => panic!("unterminated value: {line}"),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no value: {line}"));
        series.push(Series {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    series
}

/// The sum of the series `name` whose labels include every pair of `labels` (0 when none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
        .fold(0.0, |sum, v| sum + v)
}

/// `GET /metrics` of the service whose HTTP port is `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}{}", crate::metrics::METRICS_PATH);
    http_get(&url)
        .await
        .unwrap_or_else(|e| panic!("scrape {url}: {e}"))
}

/// A plain HTTP/1.1 GET, the body as text (the `/metrics` scrape, the Prometheus API).
pub async fn http_get(url: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse()?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    anyhow::ensure!(status.is_success(), "{status}: {text}");
    Ok(text)
}
