//! Building and running the notification service. The shared lifecycle (database, broker
//! check, consumer, relay, health, ordered shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;

use shop_proto::notification::v1::notification_service_server::NotificationServiceServer;
use shop_shared::auth::{AuthLayer, PublicMethods};
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::delivery::DeliveryStatus;
use crate::dispatch::Dispatcher;
use crate::email::Mailer;
use crate::email::templates::Templates;
use crate::grpc::NotificationGrpc;

/// The notification service's migrations (`migrations/notification`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/notification");

/// A built notification service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: NotificationGrpc,
    auth: AuthLayer,
    /// Emails the pending notifications; `None` without `SMTP_URL`.
    dispatcher: Option<Dispatcher>,
}

impl Application {
    /// Builds the service: with `SMTP_URL`, notifications are recorded PENDING and emailed by
    /// the dispatcher; without, RECORDED only (said once here).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mailer = config
            .email
            .smtp_url
            .as_deref()
            .map(|url| Mailer::new(url, &config.email.from))
            .transpose()?;
        let status = if mailer.is_some() {
            DeliveryStatus::Pending
        } else {
            tracing::info!("SMTP_URL is not set: notifications are recorded only, not emailed");
            DeliveryStatus::Recorded
        };
        let templates = Templates::new()
            .map_err(|e| anyhow::anyhow!("the notification templates do not parse: {e}"))?;
        let subscriptions = crate::events::subscriptions(templates, status);
        let sample_every = config.service.messaging.metrics_interval;
        let parts = service::prepare(config.service, &MIGRATOR, Some(subscriptions)).await?;
        // Every call needs a token, checked with the user service's public keys.
        let auth = AuthLayer::new(parts.jwks_verifier()?, PublicMethods::none());
        Dispatcher::zero(&parts.metrics);
        let dispatcher = mailer.map(|mailer| {
            Dispatcher::new(
                parts.pool.clone(),
                mailer,
                config.email.clone(),
                parts.metrics.clone(),
                sample_every,
            )
        });
        Ok(Self {
            grpc: NotificationGrpc {
                notifications: crate::notifications::Notifications {
                    pool: parts.pool.clone(),
                },
            },
            auth,
            parts,
            dispatcher,
        })
    }

    /// The address the gRPC server listens on (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.parts.grpc_addr()
    }

    /// The address of the HTTP port.
    pub fn http_addr(&self) -> SocketAddr {
        self.parts.http_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<service::Drained> {
        let grpc =
            NotificationServiceServer::new(self.grpc).max_decoding_message_size(MAX_REQUEST_BYTES);
        // The dispatcher stops with the service; the round in progress finishes first.
        let dispatcher = self
            .dispatcher
            .map(|d| tokio::spawn(d.run(shutdown.clone())));
        let drained =
            service::run(self.parts, grpc, axum::Router::new(), self.auth, shutdown).await;
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        drained
    }
}
