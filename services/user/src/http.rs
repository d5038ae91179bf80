//! The user service's HTTP port: the JWK Set (RFC 7517) at `/.well-known/jwks.json`, the
//! public half of every key that may still have live tokens, so that verifiers in any
//! language can check shop's tokens.

use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use shop_shared::http::JWKS_PATH;
use sqlx::PgPool;

/// The routes of the HTTP port.
pub(crate) fn router(pool: PgPool, token_ttl: Duration) -> axum::Router {
    axum::Router::new().route(
        JWKS_PATH,
        axum::routing::get(move || {
            let pool = pool.clone();
            async move { jwks(&pool, token_ttl).await }
        }),
    )
}

async fn jwks(pool: &PgPool, token_ttl: Duration) -> Response {
    match crate::keys::published(pool, token_ttl).await {
        Ok(set) => (
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                // Verifiers refetch on an unknown kid anyway; a minute of caching is safe.
                (header::CACHE_CONTROL, "public, max-age=60"),
            ],
            axum::Json(set),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot read the signing keys");
            (StatusCode::SERVICE_UNAVAILABLE, "signing keys unavailable").into_response()
        }
    }
}
