//! The JWK Set over HTTP or HTTPS: how the order, inventory and notification services (and any
//! other verifier) get the user service's public keys (`AUTH_JWKS_URL`). HTTPS uses rustls
//! with the ring provider (the same as the broker connections') and the system's roots.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{JwkSet, KeySource};

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest key set accepted.
const MAX_BYTES: usize = 256 * 1024;

/// A JWK Set at an `http://` or `https://` URL.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    url: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpJwks {
    /// A source fetching `url`: plain HTTP inside a cluster, HTTPS (verified against the
    /// system's root certificates) when the key set is reached over a network one does not
    /// trust.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let url: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("AUTH_JWKS_URL={url:?} is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme_str(), Some("http" | "https")),
            "AUTH_JWKS_URL={url} must be an http:// or https:// URL"
        );
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| anyhow::anyhow!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The URL fetched.
    pub fn url(&self) -> &http::Uri {
        &self.url
    }
}

/// `error` and its causes, `: `-separated: hyper's own message ("client error (Connect)") does
/// not say why, its causes do ("invalid peer certificate: UnknownIssuer").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[async_trait::async_trait]
impl KeySource for HttpJwks {
    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        let fetch = async {
            let response = self
                .client
                .get(self.url.clone())
                .await
                .map_err(|e| anyhow::anyhow!("GET {}: {}", self.url, with_causes(&e)))?;
            anyhow::ensure!(
                response.status().is_success(),
                "GET {}: HTTP {}",
                self.url,
                response.status()
            );
            let body = http_body_util::Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("GET {}: {e}", self.url))?
                .to_bytes();
            serde_json::from_slice::<JwkSet>(&body)
                .map_err(|e| anyhow::anyhow!("GET {}: not a JWK Set: {e}", self.url))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| anyhow::anyhow!("GET {}: timed out after {FETCH_TIMEOUT:?}", self.url))?
    }
}
