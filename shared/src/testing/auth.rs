//! Tokens for a service tested alone: a stand-in issuer serving its JWK Set over real HTTP, and
//! every kind of `authorization` the contract says is refused.

use super::service::{RunningUntilDropped, run_until_dropped};

/// A stand-in for the user service's token issuer, for testing one service alone: a signing
/// key whose JWK Set is served over real HTTP on a port of its own (the path every verifying
/// service takes in production), and tokens for any caller.
#[derive(Debug)]
pub struct TestIssuer {
    key: crate::auth::SigningKey,
    url: String,
    _server: RunningUntilDropped,
}

impl TestIssuer {
    /// A fresh key, published at [`TestIssuer::jwks_url`].
    pub async fn start() -> Self {
        let key = crate::auth::SigningKey::generate().expect("generate a signing key");
        let set = crate::auth::JwkSet {
            keys: vec![key.public_jwk().clone()],
        };
        let router = axum::Router::new().route(
            crate::http::JWKS_PATH,
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the test JWKS port");
        let url = format!(
            "http://{}{}",
            listener.local_addr().expect("an address"),
            crate::http::JWKS_PATH
        );
        let server = run_until_dropped(|s| crate::http::serve("test-issuer", listener, router, s));
        Self {
            key,
            url,
            _server: server,
        }
    }

    /// Where the JWK Set is served.
    pub fn jwks_url(&self) -> &str {
        &self.url
    }

    /// The signing key (for forging variants of a token in tests).
    pub fn key(&self) -> &crate::auth::SigningKey {
        &self.key
    }

    /// A valid token for `user_id` with `role`.
    pub fn token(&self, user_id: uuid::Uuid, role: crate::auth::Role) -> String {
        let claims = crate::auth::Claims::new(user_id, role, chrono::Utc::now().timestamp(), 900);
        self.key.sign(&claims).expect("sign a test token")
    }

    /// A staff token for a random staff member.
    pub fn staff(&self) -> String {
        self.token(uuid::Uuid::now_v7(), crate::auth::Role::Staff)
    }

    /// A customer token for `user_id`.
    pub fn customer(&self, user_id: uuid::Uuid) -> String {
        self.token(user_id, crate::auth::Role::Customer)
    }
}

/// Every kind of `authorization` value docs/contract.md says is refused with UNAUTHENTICATED,
/// labelled, made against `key` (the real signing key, so that only the named defect is
/// wrong): none at all, `Basic`, garbage, `alg: none`, HS256 keyed with the public key,
/// another key claiming `key`'s `kid`, a payload swapped under a good signature, an expired
/// token, a wrong `iss` and a wrong `aud`. Each would otherwise act as staff `sub`.
pub fn refused_authorizations(
    key: &crate::auth::SigningKey,
    sub: uuid::Uuid,
) -> Vec<(&'static str, Option<String>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    let now = chrono::Utc::now().timestamp();
    let staff = crate::auth::Claims::new(sub, crate::auth::Role::Staff, now, 900);
    let good = key.sign(&staff).expect("sign");
    let header = |alg| Header {
        kid: Some(key.kid().to_owned()),
        ..Header::new(alg)
    };
    let json = |v: &dyn erased_json::Json| B64.encode(v.to_vec());
    let none = format!(
        "{}.{}.",
        B64.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        )),
        json(&staff)
    );
    let public = serde_json::to_vec(key.public_jwk()).expect("jwk");
    let hs256 = jsonwebtoken::encode(
        &header(Algorithm::HS256),
        &staff,
        &EncodingKey::from_secret(&public),
    )
    .expect("sign hs256");
    let impostor = crate::auth::SigningKey::generate().expect("key");
    let same_kid = jsonwebtoken::encode(
        &header(Algorithm::ES256),
        &staff,
        &EncodingKey::from_ec_der(impostor.pkcs8_der()),
    )
    .expect("sign");
    let customer = crate::auth::Claims::new(sub, crate::auth::Role::Customer, now, 900);
    let signed_customer = key.sign(&customer).expect("sign");
    let mut parts: Vec<String> = signed_customer.split('.').map(str::to_owned).collect();
    parts[1] = json(&staff);
    let tampered = parts.join(".");
    let expired = key
        .sign(&crate::auth::Claims::new(
            sub,
            crate::auth::Role::Staff,
            now - 1000,
            900,
        ))
        .expect("sign");
    let mut wrong_iss = staff.clone();
    wrong_iss.iss = "not-shop".into();
    let mut wrong_aud = staff.clone();
    wrong_aud.aud = "not-shop".into();
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    vec![
        ("no token", None),
        ("Basic", Some(format!("Basic {good}"))),
        ("garbage", bearer("garbage.garbage.garbage")),
        ("alg none", bearer(&none)),
        ("HS256 with the public key", bearer(&hs256)),
        ("another key with the same kid", bearer(&same_kid)),
        ("tampered payload", bearer(&tampered)),
        ("expired", bearer(&expired)),
        ("wrong iss", bearer(&key.sign(&wrong_iss).expect("sign"))),
        ("wrong aud", bearer(&key.sign(&wrong_aud).expect("sign"))),
    ]
}

/// `message` with the raw `authorization` value (or none).
pub fn with_authorization<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization
        && let Ok(value) = value.parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

mod erased_json {
    /// Anything serialisable, as JSON bytes (keeps the helper above short).
    pub(super) trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("serialisable")
        }
    }
}
