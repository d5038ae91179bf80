//! Building and running the inventory service. The shared lifecycle (database, broker check,
//! relay, health, inventoryed shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;

use shop_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use shop_shared::auth::{AuthLayer, PublicMethods};
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::retention::Purge;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::grpc::InventoryGrpc;

/// The inventory service's migrations (`migrations/inventory`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/inventory");

/// A built inventory service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: InventoryGrpc,
    auth: AuthLayer,
}

impl Application {
    /// Opens and migrates the database, checks the broker and declares the queues, binds
    /// the gRPC listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut parts = service::prepare(
            config.service,
            &MIGRATOR,
            Some(crate::events::subscriptions()),
        )
        .await?;
        let retention = config.reservation_retention;
        parts
            .purges
            .push(Purge::new("reservations", move |pool, chunk| {
                Box::pin(async move {
                    crate::repository::purge_settled_reservations(&pool, retention, chunk).await
                })
            }));
        // Every call needs a token, checked with the user service's public keys.
        let auth = AuthLayer::new(parts.jwks_verifier()?, PublicMethods::none());
        Ok(Self {
            grpc: InventoryGrpc {
                stock: crate::stock::Stock {
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
            InventoryServiceServer::new(self.grpc).max_decoding_message_size(MAX_REQUEST_BYTES);
        service::run(self.parts, grpc, axum::Router::new(), self.auth, shutdown).await
    }
}
