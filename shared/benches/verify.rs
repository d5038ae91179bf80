//! What verifying an access token costs per call: the first sight of a token (an ES256
//! signature check) and every later call with it (the verified-token cache: a SHA-256 and a
//! map lookup). `cargo bench -p shop-shared --bench verify` prints both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shop_shared::auth::verifier::StaticKeys;
use shop_shared::auth::{Claims, JwkSet, Role, SigningKey, Verifier};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let key = SigningKey::generate().expect("a key");
    let set = JwkSet {
        keys: vec![key.public_jwk().clone()],
    };
    let now = chrono::Utc::now().timestamp();
    let tokens: Vec<String> = (0..2000)
        .map(|_| {
            let claims = Claims::new(uuid::Uuid::now_v7(), Role::Customer, now, 900);
            key.sign(&claims).expect("signed")
        })
        .collect();
    runtime.block_on(async {
        let verifier = Verifier::new(Arc::new(StaticKeys(set)), Duration::from_secs(1));
        verifier.refresh().await.expect("keys");
        // First sight of each token: the signature is checked.
        let start = Instant::now();
        for token in &tokens {
            verifier.verify(token).await.expect("valid");
        }
        let first = start.elapsed() / tokens.len() as u32;
        // The same tokens again: answered from the cache.
        let rounds = 50;
        let start = Instant::now();
        for _ in 0..rounds {
            for token in &tokens {
                verifier.verify(token).await.expect("valid");
            }
        }
        let cached = start.elapsed() / (tokens.len() * rounds) as u32;
        println!(
            "token verification: first call {:.1} µs (ES256 signature), later calls {:.2} µs (cache), {} tokens",
            first.as_secs_f64() * 1e6,
            cached.as_secs_f64() * 1e6,
            tokens.len()
        );
    });
}
