//! A service under test: its environment (database and prefix), its settings, its ports, a
//! gRPC channel to it, and a task that runs it until the guard drops.

use std::future::Future;
use std::time::Duration;

use crate::messaging::RetryPolicy;

use super::broker::TestBroker;
use super::database::TestDatabase;
use super::init_logs;

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

/// A service a test started: its addresses, a channel to its gRPC port, and the guard that
/// stops it when the test's app drops (keep it the app's first field, so the service stops
/// before its database and prefix are removed).
#[derive(Debug)]
pub struct SpawnedService {
    /// Stops the service when dropped.
    pub running: RunningUntilDropped,
    /// Its gRPC address (port 0 resolved).
    pub grpc_addr: std::net::SocketAddr,
    /// Its HTTP address (`/metrics`, `/ready`, the JWK Set).
    pub http_addr: std::net::SocketAddr,
    /// A channel to its gRPC port, for the test's clients.
    pub channel: tonic::transport::Channel,
}

/// Runs a built service until the returned guard drops: `addrs` are its bound addresses
/// (`(app.grpc_addr(), app.http_addr())`), `run` its `|s| app.run_until_stopped(s)`. What the
/// four services' `spawn_app`s share.
pub async fn spawn_service<F>(
    addrs: (std::net::SocketAddr, std::net::SocketAddr),
    run: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> SpawnedService
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (grpc_addr, http_addr) = addrs;
    SpawnedService {
        running: run_until_dropped(run),
        grpc_addr,
        http_addr,
        channel: grpc_channel(grpc_addr).await,
    }
}

/// A bearer token interceptor that sends `token`.
pub fn bearer(token: &str) -> crate::auth::BearerToken {
    let bearer = crate::auth::BearerToken::new();
    bearer.set(token).expect("a token is ASCII");
    bearer
}

/// Settings for a service under test: port 0 on localhost, the test's database and broker
/// prefix, quick retries and polling.
pub fn service_config(
    name: &'static str,
    database: &TestDatabase,
    broker: &TestBroker,
) -> crate::service::ServiceConfig {
    let messaging = crate::messaging::MessagingConfig {
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            factor: 2,
            max_attempts: 3,
        },
        outbox_poll: Duration::from_millis(200),
        // Tests read the sampled gauges: sample often.
        metrics_interval: Duration::from_millis(100),
        ..crate::messaging::MessagingConfig::default()
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
