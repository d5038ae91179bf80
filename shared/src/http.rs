//! The HTTP port every service serves beside gRPC (docs/contract.md, "HTTP port"): plain HTTP/1.1
//! for what is not an RPC: the user service's JWK Set today, `/metrics` on every service.
//! Also the background task that keeps a verifier's keys fresh.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;

/// The path of the JWK Set on the user service's HTTP port.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Serves `router` on `listener` until `shutdown` (in-flight requests finish first).
pub async fn serve(
    service: &'static str,
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(service, error = %e, "the HTTP port failed");
    }
}

/// Fetches `verifier`'s keys now, then every `every`, until `shutdown`. A failed fetch keeps
/// the cached keys: tokens go on being verified while the user service is away.
pub async fn refresh_keys(verifier: Arc<Verifier>, every: Duration, shutdown: CancellationToken) {
    let mut first = true;
    loop {
        match verifier.refresh().await {
            Ok(count) => tracing::debug!(keys = count, "token keys refreshed"),
            // At start the user service may not be up yet: the first token refetches.
            Err(e) if first => {
                tracing::info!(error = %format!("{e:#}"), "token keys not fetched yet; the first token will fetch them")
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot refresh the token keys; verifying with the cached ones")
            }
        }
        first = false;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
