//! The life of a service process, the same for all four: open the database (creating and
//! migrating it), check the broker, then serve gRPC (every call authenticated by the shared
//! [`AuthLayer`]) and the HTTP port while the outbox relay and the consumer run, and stop in
//! order on shutdown.
//!
//! Shutdown order: health NOT_SERVING; stop accepting RPCs and let in-flight ones finish,
//! while the consumer starts no new batch, finishes (commits and acks) the ones in progress,
//! cancels its consumers and closes its channels; then the relay publishes what those
//! committed and closes its channel; then the service's two broker connections (unless the
//! process shares them between services: then its owner closes them after the last service);
//! then the HTTP port; then the pool. Every broker connection is closed before the runtime
//! goes, and the service returns what it drained ([`Drained`]) for the final `shop stopped`
//! line.
//!
//! The HTTP port serves the caller's routes and `GET /metrics` ([`crate::metrics`]); the
//! gauges that need a query are sampled by a background task beside the HTTP port.
//!
//! Starting (database, broker, queues, listeners) is in `startup`.

mod startup;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic_health::ServingStatus;

use crate::auth::AuthLayer;
use crate::config::{AmqpConfig, AuthConfig, Source};
use crate::messaging::MessagingConfig;
use crate::messaging::{Consumer, Links, Names, OutboxWaker, Relay, RelayConfig, Subscriptions};
use crate::metrics::Metrics;
use crate::retention::Purge;

/// How long after the shutdown signal in-flight gRPC calls may go on; response streams still
/// open then (a `Health/Watch`, say) are ended with UNAVAILABLE ([`crate::grpc_drain`]).
pub const GRPC_DRAIN: Duration = Duration::from_secs(5);
/// How long after the signal the gRPC server is waited for at most: a connection whose client
/// does not even read the end of its stream is left behind (the process exits without it).
const GRPC_STOP_DEADLINE: Duration = Duration::from_secs(7);
/// How long after the shutdown signal the consumer, the relay and the HTTP port have to stop:
/// the contract gives a stopping process 10 s from the signal.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);

/// What a service finished after the shutdown signal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Deliveries settled (applied and acked, retried or dead-lettered) by the consumer's
    /// last batches.
    pub deliveries: u64,
    /// Events the relay published in its last rounds.
    pub events: u64,
}

impl std::ops::Add for Drained {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            deliveries: self.deliveries + other.deliveries,
            events: self.events + other.events,
        }
    }
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} deliveries settled and {} events published after the signal",
            self.deliveries, self.events
        )
    }
}

/// The settings of one service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's name: `user`, `order`, `inventory` or `notification`. Also its queue,
    /// its AMQP `app_id` and its inbox consumer name.
    pub name: &'static str,
    /// `<SERVICE>_GRPC_ADDR`, default `0.0.0.0:<port>` (50051–50054).
    pub grpc_addr: SocketAddr,
    /// `<SERVICE>_HTTP_ADDR`, default `0.0.0.0:<port>` (9091–9094): JWKS and metrics.
    pub http_addr: SocketAddr,
    /// `<SERVICE>_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/shop_<service>`.
    pub database_url: String,
    /// `DATABASE_POOL_SIZE` (default 16): connections per service.
    pub pool_size: u32,
    /// Broker URL and name prefix.
    pub amqp: AmqpConfig,
    /// Consumer and relay tuning.
    pub messaging: MessagingConfig,
    /// How access tokens are verified.
    pub auth: AuthConfig,
    /// The broker connections of a process that runs several services (`shop up`), shared
    /// by all of them; `None` (the default): the service opens its own two.
    pub shared_links: Option<Links>,
}

impl ServiceConfig {
    /// Reads the environment, with the defaults above.
    pub fn from_env(
        name: &'static str,
        default_port: u16,
        default_http_port: u16,
    ) -> anyhow::Result<Self> {
        Self::load(name, default_port, default_http_port, Source::Environment)
    }

    /// Reads the settings of service `name` from `source`.
    pub fn load(
        name: &'static str,
        default_port: u16,
        default_http_port: u16,
        source: Source,
    ) -> anyhow::Result<Self> {
        let upper = name.to_uppercase();
        let grpc_addr = source.addr(
            &format!("{upper}_GRPC_ADDR"),
            SocketAddr::from(([0, 0, 0, 0], default_port)),
        )?;
        let http_addr = source.addr(
            &format!("{upper}_HTTP_ADDR"),
            SocketAddr::from(([0, 0, 0, 0], default_http_port)),
        )?;
        Ok(Self {
            name,
            grpc_addr,
            http_addr,
            database_url: source.get_or(
                &format!("{upper}_DATABASE_URL"),
                format!("postgres://postgres@127.0.0.1:5432/shop_{name}"),
            )?,
            pool_size: source.get("DATABASE_POOL_SIZE")?,
            amqp: AmqpConfig::load(source)?,
            messaging: MessagingConfig::load(source)?,
            auth: AuthConfig::load(source)?,
            shared_links: None,
        })
    }

    /// Broker names under the configured prefix.
    pub fn names(&self) -> Names {
        Names::new(self.amqp.prefix.clone())
    }
}

pub use startup::{check_broker, open_database, prepare};

/// Everything a service runs besides its own gRPC implementation.
#[derive(Debug)]
pub struct ServiceParts {
    /// The settings.
    pub config: ServiceConfig,
    /// The service's database.
    pub pool: PgPool,
    /// The bound gRPC listener.
    pub listener: TcpListener,
    /// The bound HTTP listener (JWKS, metrics).
    pub http_listener: TcpListener,
    /// The events the service consumes (`None` for a service that consumes nothing).
    pub subscriptions: Option<Subscriptions>,
    /// Wakes the service's relay: call [`OutboxWaker::wake`] after committing staged events.
    pub waker: OutboxWaker,
    /// The service's instruments, served at `GET /metrics` on the HTTP port.
    pub metrics: Metrics,
    /// The broker connections the relay and the consumer take their channels from.
    pub links: Links,
    /// Whether the links are the service's own (closed when it stops) or the process's.
    pub owned_links: bool,
    /// The tables purged on a schedule (the inbox, when the service consumes); a service adds
    /// its own.
    pub purges: Vec<Purge>,
}

impl ServiceParts {
    /// The address the gRPC server listens on (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.grpc_addr)
    }

    /// The address the HTTP port listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .unwrap_or(self.config.http_addr)
    }

    /// The verifier of the order, inventory and notification services: the JWK Set at
    /// `AUTH_JWKS_URL`, public keys only.
    pub fn jwks_verifier(&self) -> anyhow::Result<std::sync::Arc<crate::auth::Verifier>> {
        let source = crate::auth::jwks_client::HttpJwks::new(&self.config.auth.jwks_url)?;
        Ok(std::sync::Arc::new(crate::auth::Verifier::new(
            std::sync::Arc::new(source),
            self.config.auth.jwks_refetch,
        )))
    }
}

/// Runs a service until `shutdown`: relay and consumer in the background, the HTTP port
/// (`http`), and `grpc` with health and reflection behind `auth` in the foreground. See the
/// module docs for the shutdown order.
pub async fn run<S>(
    parts: ServiceParts,
    grpc: S,
    http: axum::Router,
    auth: AuthLayer,
    shutdown: CancellationToken,
) -> anyhow::Result<Drained>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let ServiceParts {
        config,
        pool,
        listener,
        http_listener,
        subscriptions,
        waker,
        metrics,
        links,
        owned_links,
        purges,
    } = parts;
    let tracker = TaskTracker::new();
    let names = config.names();

    tracing::info!(service = config.name, addr = %http_listener.local_addr()?, "serving HTTP");
    tracker.spawn(crate::http::serve(
        config.name,
        http_listener,
        http.merge(metrics.router()).merge(
            crate::readiness::Readiness::new(pool.clone(), links.clone(), subscriptions.is_some())
                .router(),
        ),
        shutdown.clone(),
    ));
    tracker.spawn(crate::metrics::sampler::run(
        metrics.clone(),
        pool.clone(),
        config.messaging.metrics_interval,
        shutdown.clone(),
    ));
    tracker.spawn(crate::retention::run(
        config.name,
        pool.clone(),
        purges,
        config.messaging.purge_interval,
        shutdown.clone(),
    ));
    tracker.spawn(crate::http::refresh_keys(
        auth.verifier(),
        config.auth.jwks_refresh,
        shutdown.clone(),
    ));

    let consumer = subscriptions.map(|subscriptions| {
        let consumer = Consumer::new(
            pool.clone(),
            links.consume.clone(),
            names.clone(),
            config.name,
            subscriptions,
            config.messaging.clone(),
        )
        .with_waker(waker.clone())
        .with_metrics(metrics.clone());
        tokio::spawn(consumer.run(shutdown.clone()))
    });
    // The relay stops last, once nothing can stage events any more: what the last RPCs and
    // the consumer's last batches committed is published before the service exits.
    let relay_stop = CancellationToken::new();
    let relay = Relay::new(
        pool.clone(),
        links.publish.clone(),
        names,
        config.name,
        RelayConfig::from(&config.messaging),
    )
    .with_waker(waker)
    .with_metrics(metrics.clone());
    let relay = tokio::spawn(relay.run(relay_stop.clone()));
    tracker.close();

    let standard = crate::grpc::standard_services(shop_proto::FILE_DESCRIPTOR_SET, S::NAME)?;
    let reporter = standard.reporter.clone();
    // The database answered (migrations ran) and the broker answered (the exchange and the
    // queues are declared): only now is the service SERVING.
    reporter
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    tracing::info!(service = config.name, addr = %listener.local_addr()?, "serving gRPC");

    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(standard.health)
        .add_service(standard.reflection_v1)
        .add_service(standard.reflection_v1alpha)
        .add_service(grpc);
    let mut routes = routes.routes();
    crate::grpc::explain_unknown_services(&mut routes, config.name, S::NAME);
    // When the signal came: every stage of the shutdown is bounded from it.
    let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
    let drained = CancellationToken::new();
    let drain_timer = tokio::spawn({
        let (shutdown, drained, signalled) = (shutdown.clone(), drained.clone(), signalled.clone());
        async move {
            shutdown.cancelled().await;
            let at = *signalled.get_or_init(tokio::time::Instant::now);
            tokio::time::sleep_until(at + GRPC_DRAIN).await;
            drained.cancel();
        }
    });
    let stop = shutdown.clone();
    let serve = crate::grpc::server(auth.protecting(S::NAME), metrics, drained)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                stop.cancelled().await;
                reporter
                    .set_service_status(S::NAME, ServingStatus::NotServing)
                    .await;
                reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
            },
        );
    let gave_up = {
        let (shutdown, signalled) = (shutdown.clone(), signalled.clone());
        async move {
            shutdown.cancelled().await;
            let at = *signalled.get_or_init(tokio::time::Instant::now);
            tokio::time::sleep_until(at + GRPC_STOP_DEADLINE).await;
        }
    };
    let result = tokio::select! {
        result = serve => result,
        () = gave_up => {
            tracing::warn!(
                service = config.name,
                "gRPC connections still open {GRPC_STOP_DEADLINE:?} after the signal: stopping without them"
            );
            Ok(())
        }
    };
    drain_timer.abort();
    // The server also returns on an error: make sure the background tasks stop with it.
    shutdown.cancel();
    let deadline = *signalled.get_or_init(tokio::time::Instant::now) + SHUTDOWN_DEADLINE;
    let mut drained = Drained::default();
    if let Some(consumer) = consumer {
        drained.deliveries = join_by(deadline, consumer, config.name, "consumer").await;
    }
    relay_stop.cancel();
    drained.events = join_by(deadline, relay, config.name, "outbox relay").await;
    if owned_links {
        links.close("service stopping").await;
    }
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            service = config.name,
            "the HTTP port did not stop within the deadline"
        );
    }
    pool.close().await;
    result.context("the gRPC server failed")?;
    tracing::info!(
        service = config.name,
        deliveries = drained.deliveries,
        events = drained.events,
        "service stopped"
    );
    Ok(drained)
}

/// Waits for a messaging task until `deadline`, warning when it is late or panicked.
async fn join_by(
    deadline: tokio::time::Instant,
    task: tokio::task::JoinHandle<u64>,
    service: &str,
    what: &str,
) -> u64 {
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(drained)) => drained,
        Ok(Err(e)) => {
            tracing::warn!(service, error = %e, "the {what} task failed");
            0
        }
        Err(_) => {
            tracing::warn!(service, "the {what} did not stop within the deadline");
            0
        }
    }
}
