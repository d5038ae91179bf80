//! The four services in one process: built first (so a missing database or broker is
//! reported before anything serves), then run until shutdown. If one stops with an error,
//! the others stop too.

use std::net::SocketAddr;

use std::time::Duration;

use shop_shared::messaging::Links;
use shop_shared::service::Drained;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A service of shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// Registration and profiles (50051).
    User,
    /// Orders and their saga (50052).
    Order,
    /// Stock and reservations (50053).
    Inventory,
    /// Notifications to users (50054).
    Notification,
}

impl ServiceName {
    /// The service's name as in its settings and queue: `user`, `order`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Order => "order",
            Self::Inventory => "inventory",
            Self::Notification => "notification",
        }
    }
}

/// The configuration of all four services.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// The user service.
    pub user: shop_user::Config,
    /// The order service.
    pub order: shop_order::Config,
    /// The inventory service.
    pub inventory: shop_inventory::Config,
    /// The notification service.
    pub notification: shop_notification::Config,
}

impl SystemConfig {
    /// Every service configured from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            user: shop_user::Config::from_env()?,
            order: shop_order::Config::from_env()?,
            inventory: shop_inventory::Config::from_env()?,
            notification: shop_notification::Config::from_env()?,
        })
    }
}

/// The four services, built and bound, not yet running.
#[derive(Debug)]
pub struct BuiltSystem {
    /// The user service.
    pub user: shop_user::Application,
    /// The order service.
    pub order: shop_order::Application,
    /// The inventory service.
    pub inventory: shop_inventory::Application,
    /// The notification service.
    pub notification: shop_notification::Application,
    /// The two broker connections the services share (see [`BuiltSystem::build`]). Whoever
    /// runs the services without [`BuiltSystem::spawn`] closes them once all have stopped.
    pub links: Option<Links>,
}

/// The addresses of a running system's services (their gRPC or their HTTP ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The user service.
    pub user: SocketAddr,
    /// The order service.
    pub order: SocketAddr,
    /// The inventory service.
    pub inventory: SocketAddr,
    /// The notification service.
    pub notification: SocketAddr,
}

impl BuiltSystem {
    /// Builds every service: databases created and migrated, the broker checked, every queue
    /// declared, every listener bound.
    ///
    /// The order, inventory and notification services verify tokens with the JWK Set of the
    /// user service, over HTTP as in separate processes; when their `AUTH_JWKS_URL` is the
    /// default, it is pointed at the user service built here (whose port may be 0 in tests).
    ///
    /// The services share one publishing and one consuming broker connection (each lapin
    /// connection is a thread; channels are cheap) when they talk to the same broker under the
    /// same prefix, as they do from one environment.
    pub async fn build(mut config: SystemConfig) -> anyhow::Result<Self> {
        let links = share_links(&mut config);
        let user = shop_user::Application::build(config.user).await?;
        let jwks = jwks_url(user.http_addr());
        for service in [
            &mut config.order.service,
            &mut config.inventory.service,
            &mut config.notification.service,
        ] {
            if service.auth.jwks_url == shop_shared::config::DEFAULT_JWKS_URL {
                service.auth.jwks_url = jwks.clone();
            }
        }
        Ok(Self {
            user,
            order: shop_order::Application::build(config.order).await?,
            inventory: shop_inventory::Application::build(config.inventory).await?,
            notification: shop_notification::Application::build(config.notification).await?,
            links,
        })
    }

    /// Where each service listens.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            user: self.user.grpc_addr(),
            order: self.order.grpc_addr(),
            inventory: self.inventory.grpc_addr(),
            notification: self.notification.grpc_addr(),
        }
    }

    /// Where each service serves its HTTP port (JWKS, `/metrics`).
    pub fn http_addresses(&self) -> Addresses {
        Addresses {
            user: self.user.http_addr(),
            order: self.order.http_addr(),
            inventory: self.inventory.http_addr(),
            notification: self.notification.http_addr(),
        }
    }

    /// Starts every service in the background.
    pub fn spawn(self, shutdown: CancellationToken) -> RunningSystem {
        let addresses = self.addresses();
        let stop_all = |shutdown: CancellationToken| {
            move |result: anyhow::Result<Drained>| {
                if result.is_err() {
                    shutdown.cancel();
                }
                result
            }
        };
        let tasks = vec![
            tokio::spawn({
                let (s, done) = (shutdown.clone(), stop_all(shutdown.clone()));
                async move { done(self.user.run_until_stopped(s).await) }
            }),
            tokio::spawn({
                let (s, done) = (shutdown.clone(), stop_all(shutdown.clone()));
                async move { done(self.order.run_until_stopped(s).await) }
            }),
            tokio::spawn({
                let (s, done) = (shutdown.clone(), stop_all(shutdown.clone()));
                async move { done(self.inventory.run_until_stopped(s).await) }
            }),
            tokio::spawn({
                let (s, done) = (shutdown.clone(), stop_all(shutdown.clone()));
                async move { done(self.notification.run_until_stopped(s).await) }
            }),
        ];
        RunningSystem {
            addresses,
            shutdown,
            tasks,
            links: self.links,
        }
    }
}

/// Gives every service the same two broker connections when all four use one broker and one
/// prefix and none was given links already; returns them (their owner closes them).
fn share_links(config: &mut SystemConfig) -> Option<Links> {
    let mut services = [
        &mut config.user.service,
        &mut config.order.service,
        &mut config.inventory.service,
        &mut config.notification.service,
    ];
    let first = &services[0].amqp;
    let same = services.iter().all(|s| {
        s.amqp.url == first.url && s.amqp.prefix == first.prefix && s.shared_links.is_none()
    });
    if !same {
        return None;
    }
    let links = Links::new(&first.url, &services[0].names(), "services");
    for service in &mut services {
        service.shared_links = Some(links.clone());
    }
    Some(links)
}

/// The JWK Set URL of a user service whose HTTP port is bound at `addr`.
pub fn jwks_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!(
        "http://{}{}",
        SocketAddr::new(host, addr.port()),
        shop_shared::http::JWKS_PATH
    )
}

/// The four services running in this process.
#[derive(Debug)]
pub struct RunningSystem {
    /// Where each service listens.
    pub addresses: Addresses,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<Drained>>>,
    links: Option<Links>,
}

/// How long `shop up` waits for every service to answer its health check.
const SERVING_DEADLINE: Duration = Duration::from_secs(30);

impl RunningSystem {
    /// Waits until every service answers SERVING on its gRPC port, or one of them stopped
    /// (`false`), or the deadline passed (an error).
    pub async fn until_serving(&self) -> anyhow::Result<bool> {
        let a = self.addresses;
        let deadline = tokio::time::Instant::now() + SERVING_DEADLINE;
        for addr in [a.user, a.order, a.inventory, a.notification] {
            loop {
                if self.shutdown.is_cancelled() || self.tasks.iter().any(|t| t.is_finished()) {
                    return Ok(false);
                }
                if serving(addr).await {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "the service at {addr} did not answer SERVING within {SERVING_DEADLINE:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(true)
    }

    /// Waits until every service stopped (after `shutdown`, or after one failed), adds up
    /// what they drained, and closes the shared broker connections.
    pub async fn wait(self) -> anyhow::Result<Drained> {
        let mut first_error = None;
        let mut drained = Drained::default();
        for task in self.tasks {
            let result = task
                .await
                .map_err(|e| anyhow::anyhow!("a service panicked: {e}"))
                .and_then(|r| r);
            match result {
                Ok(d) => drained = drained + d,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(links) = self.links {
            links.close("shop stopping").await;
        }
        first_error.map_or(Ok(drained), Err)
    }

    /// Stops every service and waits for them.
    pub async fn stop(self) -> anyhow::Result<Drained> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Whether the gRPC server at `addr` answers its health check with SERVING.
async fn serving(addr: SocketAddr) -> bool {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let host = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        SocketAddr::new(host, addr.port())
    )) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| {
            r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        })
}

/// `shop up`: all four services from the environment until `shutdown`. "shop is up" is
/// logged once every service answers SERVING, "shop stopped" once all four have drained and
/// closed their connections.
pub async fn up(shutdown: CancellationToken) -> anyhow::Result<()> {
    let built = BuiltSystem::build(SystemConfig::from_env()?).await?;
    let a = built.addresses();
    let running = built.spawn(shutdown);
    if running.until_serving().await? {
        tracing::info!(user = %a.user, order = %a.order, inventory = %a.inventory, notification = %a.notification, "shop is up");
    }
    let drained = running.wait().await?;
    tracing::info!("shop stopped: all four services drained ({drained})");
    Ok(())
}

/// `shop serve <service>`: one service from the environment until `shutdown`.
pub async fn serve(service: ServiceName, shutdown: CancellationToken) -> anyhow::Result<()> {
    let drained = match service {
        ServiceName::User => {
            let app = shop_user::Application::build(shop_user::Config::from_env()?).await?;
            app.run_until_stopped(shutdown).await?
        }
        ServiceName::Order => {
            let app = shop_order::Application::build(shop_order::Config::from_env()?).await?;
            app.run_until_stopped(shutdown).await?
        }
        ServiceName::Inventory => {
            let app =
                shop_inventory::Application::build(shop_inventory::Config::from_env()?).await?;
            app.run_until_stopped(shutdown).await?
        }
        ServiceName::Notification => {
            let app = shop_notification::Application::build(shop_notification::Config::from_env()?)
                .await?;
            app.run_until_stopped(shutdown).await?
        }
    };
    tracing::info!(
        "shop stopped: the {} service drained ({drained})",
        service.as_str()
    );
    Ok(())
}
