//! Building and running the user service. The shared lifecycle (database, broker check,
//! relay, health, the auth layer, ordered shutdown) lives in `shop_shared::service`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shop_proto::user::v1::user_service_server::UserServiceServer;
use shop_shared::auth::{AuthLayer, PublicMethods, Verifier};
use shop_shared::grpc::MAX_REQUEST_BYTES;
use shop_shared::retention::Purge;
use shop_shared::service::{self, ServiceParts};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::grpc::{PUBLIC_METHODS, UserGrpc};
use crate::keys::{self, CurrentKey, DatabaseKeys};
use crate::password_checks::PasswordChecks;
use crate::repository;
use crate::users::Users;

/// The user service's migrations (`migrations/user`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/user");

/// A built user service, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    parts: ServiceParts,
    grpc: UserGrpc,
    auth: AuthLayer,
}

impl Application {
    /// Opens and migrates the database, makes sure a signing key and the staff account
    /// exist, checks the broker, binds the gRPC and HTTP listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut parts = service::prepare(config.service, &MIGRATOR, None).await?;
        let window = config.auth.login_window;
        parts
            .purges
            .push(Purge::new("login_failures", move |pool, chunk| {
                Box::pin(
                    async move { repository::purge_login_failures(&pool, window, chunk).await },
                )
            }));
        let key = keys::ensure_signing_key(&parts.pool)
            .await
            .context("failed to load or create the token signing key")?;
        let dropped = keys::prune(&parts.pool, config.auth.token_ttl).await?;
        if !dropped.is_empty() {
            tracing::info!(kids = ?dropped, "dropped retired signing keys whose tokens have expired");
        }
        let hashing = config.password;
        let dummy_hash =
            tokio::task::spawn_blocking(move || crate::domain::password::dummy_hash(hashing))
                .await??;
        let users = Users {
            pool: parts.pool.clone(),
            waker: parts.waker.clone(),
            hashing,
            password_checks: PasswordChecks::new(config.password_checks),
            auth: config.auth.clone(),
            key: CurrentKey::new(key),
            dummy_hash: dummy_hash.into(),
            retired: parts.config.messaging.retired.clone(),
        };
        match &config.auth.admin {
            Some(admin) => users
                .ensure_staff(admin)
                .await
                .context("failed to set up the staff account (SHOP_ADMIN_EMAIL)")?,
            None => tracing::info!(
                "no staff account: set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to have one"
            ),
        }
        // The user service verifies with the same public keys it publishes, read from its
        // own database.
        let verifier = Arc::new(Verifier::new(
            Arc::new(DatabaseKeys {
                pool: parts.pool.clone(),
                token_ttl: config.auth.token_ttl,
            }),
            parts.config.auth.jwks_refetch,
        ));
        Ok(Self {
            grpc: UserGrpc { users },
            auth: AuthLayer::new(verifier, PublicMethods::of(PUBLIC_METHODS)),
            parts,
        })
    }

    /// The address the gRPC server listens on (the real port when configured with port 0).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.parts.grpc_addr()
    }

    /// The address of the HTTP port (the JWK Set at `/.well-known/jwks.json`).
    pub fn http_addr(&self) -> SocketAddr {
        self.parts.http_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> anyhow::Result<service::Drained> {
        let http = crate::http::router(self.parts.pool.clone(), self.grpc.users.auth.token_ttl);
        let grpc = UserServiceServer::new(self.grpc).max_decoding_message_size(MAX_REQUEST_BYTES);
        service::run(self.parts, grpc, http, self.auth, shutdown).await
    }
}
