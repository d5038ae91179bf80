//! Building and running the order service. The shared lifecycle (database, broker check,
//! relay, health, ordered shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;

use shop_proto::order::v1::order_service_server::OrderServiceServer;
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::grpc::OrderGrpc;

/// The order service's migrations (`migrations/order`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// A built order service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: OrderGrpc,
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
        Ok(Self {
            grpc: OrderGrpc {
                pool: parts.pool.clone(),
                waker: parts.waker.clone(),
            },
            parts,
        })
    }

    /// The address the gRPC server listens on (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.parts
            .listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let grpc = OrderServiceServer::new(self.grpc).max_decoding_message_size(MAX_REQUEST_BYTES);
        service::run(self.parts, grpc, shutdown).await
    }
}
