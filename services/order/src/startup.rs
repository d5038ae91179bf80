//! Building and running the order service. The shared lifecycle (database, broker check,
//! relay, health, ordered shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;

use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_shared::auth::{AuthLayer, PublicMethods};
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::grpc::OrderGrpc;
use crate::orders::Orders;

/// The order service's migrations (`migrations/order`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// A built order service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: OrderGrpc,
    auth: AuthLayer,
}

impl Application {
    /// Opens and migrates the database, checks the broker and declares the queues, binds
    /// the gRPC listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let parts = service::prepare(
            config.service,
            &MIGRATOR,
            Some(crate::events::subscriptions()),
        )
        .await?;
        parts.metrics.zero(crate::events::DEADLINES_FIRED);
        // Every call needs a token, checked with the user service's public keys.
        let auth = AuthLayer::new(parts.jwks_verifier()?, PublicMethods::none());
        Ok(Self {
            grpc: OrderGrpc {
                orders: Orders {
                    pool: parts.pool.clone(),
                    waker: parts.waker.clone(),
                    reservation_timeout: config.reservation_timeout,
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
        let grpc = OrderServiceServer::new(self.grpc).max_decoding_message_size(MAX_REQUEST_BYTES);
        service::run(self.parts, grpc, axum::Router::new(), self.auth, shutdown).await
    }
}
