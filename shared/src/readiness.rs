//! `GET /ready` on every service's HTTP port (docs/contract.md, "HTTP port"): 200 while the
//! service can use its database and its broker, 503 with a one-line reason while it cannot.
//! `grpc.health.v1` stays the cheap liveness answer (is the process serving?); readiness is
//! what a load balancer or the Kubernetes readiness probe asks (can it do its work now?).

use std::time::Duration;

use axum::http::StatusCode;
use sqlx::PgPool;

use crate::messaging::Links;

/// The path of the readiness check on the HTTP port.
pub const READY_PATH: &str = "/ready";

/// How long each dependency has to answer before the check says it cannot be used.
const DEADLINE: Duration = Duration::from_secs(2);

/// What a service needs to be ready.
#[derive(Debug, Clone)]
pub struct Readiness {
    pool: PgPool,
    links: Links,
    /// Whether the service consumes (then its consuming connection must be up too).
    consumes: bool,
}

impl Readiness {
    /// The readiness of a service using `pool` and `links`.
    pub fn new(pool: PgPool, links: Links, consumes: bool) -> Self {
        Self {
            pool,
            links,
            consumes,
        }
    }

    /// `Ok` when the database answers and the broker connections are open; else why not.
    pub async fn check(&self) -> Result<(), String> {
        let database = tokio::time::timeout(DEADLINE, sqlx::query("SELECT 1").execute(&self.pool));
        match database.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("the database cannot be used: {e}")),
            Err(_) => return Err(format!("the database did not answer within {DEADLINE:?}")),
        }
        if !self.links.publish.connected(DEADLINE).await {
            return Err("no connection to the broker (publishing)".to_owned());
        }
        if self.consumes && !self.links.consume.connected(DEADLINE).await {
            return Err("no connection to the broker (consuming)".to_owned());
        }
        Ok(())
    }

    /// The `GET /ready` route, to merge into the service's HTTP router.
    pub fn router(self) -> axum::Router {
        axum::Router::new().route(
            READY_PATH,
            axum::routing::get(move || {
                let readiness = self.clone();
                async move {
                    match readiness.check().await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
    }
}
