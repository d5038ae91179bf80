//! Building and running the notification service. The shared lifecycle (database, broker
//! check, consumer, relay, health, ordered shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;
use std::sync::Arc;

use shop_proto::notification::v1::notification_service_server::NotificationServiceServer;
use shop_shared::auth::{AuthLayer, PublicMethods};
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::grpc::NotificationGrpc;
use crate::sender::{DatabaseSender, Sender};

/// The notification service's migrations (`migrations/notification`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/notification");

/// A built notification service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: NotificationGrpc,
    auth: AuthLayer,
}

impl Application {
    /// Builds the service with the default [`DatabaseSender`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_sender(config, Arc::new(DatabaseSender)).await
    }

    /// Builds the service with another [`Sender`] (email, SMS, a test double).
    pub async fn build_with_sender(
        config: Config,
        sender: Arc<dyn Sender>,
    ) -> anyhow::Result<Self> {
        let subscriptions = crate::events::subscriptions(sender);
        let parts = service::prepare(config.service, &MIGRATOR, Some(subscriptions)).await?;
        // Every call needs a token, checked with the user service's public keys.
        let auth = AuthLayer::new(parts.jwks_verifier()?, PublicMethods::none());
        Ok(Self {
            grpc: NotificationGrpc {
                notifications: crate::notifications::Notifications {
                    pool: parts.pool.clone(),
                },
            },
            auth,
            parts,
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
        service::run(self.parts, grpc, axum::Router::new(), self.auth, shutdown).await
    }
}
