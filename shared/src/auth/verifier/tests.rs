//! The unit tests of `verifier`.

use super::*;
use crate::auth::SigningKey;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

fn verifier_for(keys: &[&SigningKey]) -> Verifier {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.public_jwk().clone()).collect(),
    };
    Verifier::new(Arc::new(StaticKeys(set)), Duration::from_secs(1))
}

fn claims(ttl: i64) -> Claims {
    Claims::new(
        uuid::Uuid::now_v7(),
        Role::Customer,
        chrono::Utc::now().timestamp(),
        ttl,
    )
}

fn unsigned(header: &str, claims: &Claims) -> String {
    format!(
        "{}.{}.",
        B64.encode(header),
        B64.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn a_token_of_a_published_key_is_accepted_with_its_caller() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let c = claims(60);
    let token = key.sign(&c).unwrap();
    let caller = verifier
        .verify_authorization(Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(caller.user_id.to_string(), c.sub);
    assert_eq!(caller.role, Role::Customer);
    // The second call is answered from the cache, with the same caller.
    assert_eq!(verifier.verify(&token).await.unwrap(), caller);
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let c = claims(60);
    let good = key.sign(&c).unwrap();

    assert_eq!(
        verifier.verify_authorization(None).await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        verifier
            .verify_authorization(Some(&format!("Basic {good}")))
            .await,
        Err(AuthError::NotBearer)
    );
    assert_eq!(verifier.verify("garbage").await, Err(AuthError::Malformed));
    let none = unsigned(r#"{"alg":"none","typ":"JWT"}"#, &c);
    assert_eq!(verifier.verify(&none).await, Err(AuthError::WrongAlgorithm));

    // HS256 with the public key as the HMAC secret: the classic key-confusion attack.
    let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid().to_owned());
    let secret = serde_json::to_vec(key.public_jwk()).unwrap();
    let hs256 =
        jsonwebtoken::encode(&hs, &c, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap();
    assert_eq!(
        verifier.verify(&hs256).await,
        Err(AuthError::WrongAlgorithm)
    );

    // Another key claiming the published key's kid.
    let impostor = SigningKey::generate().unwrap();
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some(key.kid().to_owned());
    let forged = jsonwebtoken::encode(
        &header,
        &c,
        &jsonwebtoken::EncodingKey::from_ec_der(impostor.pkcs8_der()),
    )
    .unwrap();
    assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));

    // A payload swapped under a good signature (staff instead of customer).
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut promoted = c.clone();
    promoted.roles = vec!["staff".into()];
    let payload = B64.encode(serde_json::to_vec(&promoted).unwrap());
    parts[1] = &payload;
    assert_eq!(
        verifier.verify(&parts.join(".")).await,
        Err(AuthError::BadSignature)
    );

    // A kid nobody published.
    let unknown = impostor.sign(&c).unwrap();
    assert_eq!(verifier.verify(&unknown).await, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn expired_tokens_and_foreign_issuers_are_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let expired = key.sign(&claims(-1)).unwrap();
    assert_eq!(verifier.verify(&expired).await, Err(AuthError::Expired));
    let expiring_now = key.sign(&claims(0)).unwrap();
    assert_eq!(
        verifier.verify(&expiring_now).await,
        Err(AuthError::Expired)
    );

    let mut foreign = claims(60);
    foreign.iss = "someone-else".into();
    assert_eq!(
        verifier.verify(&key.sign(&foreign).unwrap()).await,
        Err(AuthError::WrongIssuerOrAudience)
    );
    let mut other_audience = claims(60);
    other_audience.aud = "billing".into();
    assert_eq!(
        verifier.verify(&key.sign(&other_audience).unwrap()).await,
        Err(AuthError::WrongIssuerOrAudience)
    );
    let mut no_role = claims(60);
    no_role.roles.clear();
    assert_eq!(
        verifier.verify(&key.sign(&no_role).unwrap()).await,
        Err(AuthError::BadClaim("roles"))
    );
    // A token without exp at all.
    let header = jsonwebtoken::Header {
        kid: Some(key.kid().to_owned()),
        ..jsonwebtoken::Header::new(Algorithm::ES256)
    };
    let no_exp = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "shop", "aud": "shop", "sub": uuid::Uuid::now_v7().to_string(), "roles": ["staff"]}),
        &jsonwebtoken::EncodingKey::from_ec_der(key.pkcs8_der()),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&no_exp).await,
        Err(AuthError::Malformed | AuthError::BadClaim("exp"))
    ));
}

#[tokio::test]
async fn a_cached_token_still_expires() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let c = claims(60);
    let token = key.sign(&c).unwrap();
    let caller = verifier.verify(&token).await.unwrap();
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    assert_eq!(verifier.cached(&digest, c.exp - 1), Some(caller));
    assert_eq!(verifier.cached(&digest, c.exp), None);
}

/// A key set an operator changes: what `shop keys revoke` does to the JWK Set.
#[derive(Debug, Default)]
struct ChangingKeys(Mutex<JwkSet>);

#[async_trait::async_trait]
impl KeySource for ChangingKeys {
    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        Ok(self.0.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn a_revoked_key_stops_its_cached_tokens_at_the_next_refresh() {
    let (revoked, kept) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let source = Arc::new(ChangingKeys::default());
    *source.0.lock().unwrap() = JwkSet {
        keys: vec![revoked.public_jwk().clone(), kept.public_jwk().clone()],
    };
    let verifier = Verifier::new(source.clone(), Duration::from_secs(3600));
    verifier.refresh().await.unwrap();
    let (doomed, fine) = (
        revoked.sign(&claims(600)).unwrap(),
        kept.sign(&claims(600)).unwrap(),
    );
    verifier
        .verify(&doomed)
        .await
        .expect("verified, then cached");
    verifier.verify(&fine).await.expect("verified, then cached");

    *source.0.lock().unwrap() = JwkSet {
        keys: vec![kept.public_jwk().clone()],
    };
    verifier.refresh().await.unwrap();

    assert_eq!(verifier.verify(&doomed).await, Err(AuthError::UnknownKey));
    assert!(
        verifier.verify(&fine).await.is_ok(),
        "the other key's tokens go on"
    );
}
