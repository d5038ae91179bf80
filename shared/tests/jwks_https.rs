//! `AUTH_JWKS_URL` over https against a real TLS server: a test CA made for the run, trusted
//! the way an operator trusts a private CA (`SSL_CERT_FILE`, which the system-roots loader
//! reads), a server certificate for `localhost` signed by it, and the key set served over
//! HTTP/1.1. A server whose certificate the CA did not sign is refused.
//!
//! Its own test binary: `SSL_CERT_FILE` is set for the whole process before anything reads it.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use shop_shared::auth::jwks_client::HttpJwks;
use shop_shared::auth::verifier::KeySource as _;
use shop_shared::auth::{JwkSet, SigningKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A CA and a `localhost` certificate it signed.
struct Issued {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn issue() -> Issued {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    Issued {
        ca_pem: ca.pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Serves `body` as JSON over TLS with `issued`'s certificate on a free port, to every
/// connection; returns the port.
async fn serve(issued: &Issued, body: String) -> u16 {
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![issued.cert_der.clone().into()],
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(issued.key_der.clone().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client refused the certificate
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_key_set_is_fetched_over_https_from_a_server_the_trusted_ca_signed_and_no_other() {
    // Arrange: the trusted CA in a file SSL_CERT_FILE names; a second CA nobody trusts.
    let trusted = issue();
    let stranger = issue();
    let dir = tempfile_dir();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &trusted.ca_pem).expect("write the CA");
    // SAFETY: the only test of this binary, before anything loads the roots or reads the
    // environment on another thread.
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca_file) };
    let key = SigningKey::generate().expect("a signing key");
    let set = serde_json::json!({ "keys": [key.public_jwk()] }).to_string();
    let good = serve(&trusted, set.clone()).await;
    let bad = serve(&stranger, set).await;

    // Act
    let fetched = HttpJwks::new(&format!("https://localhost:{good}/.well-known/jwks.json"))
        .expect("an https source")
        .fetch()
        .await;
    let refused = HttpJwks::new(&format!("https://localhost:{bad}/.well-known/jwks.json"))
        .expect("an https source")
        .fetch()
        .await;

    // Assert
    let fetched: JwkSet = fetched.expect("the key set over https");
    assert_eq!(fetched.keys.len(), 1);
    assert_eq!(fetched.keys[0].kid, key.public_jwk().kid);
    let error = format!(
        "{:#}",
        refused.expect_err("a certificate the CA did not sign")
    );
    assert!(
        error.to_lowercase().contains("certificate"),
        "refused for its certificate: {error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A directory of the test's own under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shop-jwks-https-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
