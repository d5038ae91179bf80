//! Verifying access tokens with public keys only.
//!
//! The algorithm is pinned to ES256: a token whose header says anything else (`none`,
//! `HS256` "signed" with the public key, RS256 …) is refused before any key is looked at.
//! `exp`, `iss` and `aud` are required and checked with no leeway, `sub` must be a UUID and
//! `roles` must name a role.
//!
//! Keys come from a [`KeySource`] (the JWK Set over HTTP for the order, inventory and
//! notification services; the user service's own database for the user service). They are
//! cached: a token with an unknown `kid` triggers one refetch (at most one per
//! `min_refetch`, so a flood of forged `kid`s cannot hammer the user service), and when the
//! source is unreachable the cached keys go on verifying.
//!
//! A verified token is remembered by its SHA-256 until its `exp`, so a caller that sends the
//! same token on every call pays the signature check once (measured in docs/performance.md:
//! the cached path costs a hash and a map lookup). A refresh that no longer lists a `kid` (a
//! revoked key) forgets every token verified with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::Digest as _;

use super::{AUDIENCE, Caller, Claims, ISSUER, JwkSet, Role};

/// The most verified tokens remembered; past it, expired ones are dropped (and if that is not
/// enough, all of them: the next calls verify again).
const CACHE_CAPACITY: usize = 50_000;

/// Where a verifier gets its public keys.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug + 'static {
    /// Every public key that may still have live tokens.
    async fn fetch(&self) -> anyhow::Result<JwkSet>;
}

/// Why a token was refused. Every variant is UNAUTHENTICATED; the messages tell a caller
/// what to fix and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error(
        "missing `authorization` metadata: log in with shop.user.v1.UserService/Login and send `authorization: Bearer <access_token>`"
    )]
    Missing,
    /// The metadata is not `Bearer <token>`.
    #[error("the `authorization` metadata must be `Bearer <access_token>`")]
    NotBearer,
    /// Not a JWT at all.
    #[error("the access token is not a valid JWT")]
    Malformed,
    /// Signed with another algorithm than ES256.
    #[error("the access token must be signed with ES256")]
    WrongAlgorithm,
    /// The header has no `kid`.
    #[error("the access token's header has no kid")]
    MissingKid,
    /// No published key has the token's `kid`.
    #[error("the access token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the access token's signature is not valid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the access token has expired: log in again")]
    Expired,
    /// `iss` or `aud` is not `shop`.
    #[error("the access token was not issued by shop for shop")]
    WrongIssuerOrAudience,
    /// A required claim is missing or has the wrong shape.
    #[error("the access token lacks a valid {0} claim")]
    BadClaim(&'static str),
}

/// A token verified before: who it names, its `exp`, the key that verified it.
struct Verified {
    caller: Caller,
    exp: i64,
    kid: Arc<str>,
}

/// Checks access tokens; share one per process (`Arc`).
pub struct Verifier {
    source: Arc<dyn KeySource>,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Verifier")
            .field("source", &self.source)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with keys from `source`, refetching for an unknown `kid` at most once per
    /// `min_refetch`. No key is fetched until [`Verifier::refresh`] or the first token.
    pub fn new(source: Arc<dyn KeySource>, min_refetch: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.algorithms = vec![Algorithm::ES256];
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
            verified: Mutex::new(HashMap::new()),
            validation,
        }
    }

    /// Fetches the key set now and replaces the cached keys with it (start-up and the
    /// periodic refresh; not counted against the unknown-`kid` rate limit). On failure the
    /// cached keys stay as they are.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        self.fetch_and_replace().await
    }

    async fn fetch_and_replace(&self) -> anyhow::Result<usize> {
        let set = self.source.fetch().await?;
        let mut keys = HashMap::with_capacity(set.keys.len());
        for jwk in set.keys {
            if jwk.kty != "EC" || jwk.crv != "P-256" {
                continue;
            }
            if let Ok(key) = DecodingKey::from_ec_components(&jwk.x, &jwk.y) {
                keys.insert(jwk.kid, Arc::new(key));
            }
        }
        let count = keys.len();
        // A key no longer listed was revoked (or expired): its tokens stop here, cached ones
        // included.
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, verified| keys.contains_key(&*verified.kid));
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(count)
    }

    /// The `kid`s currently cached.
    pub fn cached_kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        kids.sort();
        kids
    }

    fn key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// A key for `kid`, refetching the set once if it is unknown (rate-limited).
    async fn key_or_refetch(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        if let Some(key) = self.key(kid) {
            return Some(key);
        }
        let mut last = self.last_fetch.lock().await;
        // Another caller may have fetched while this one waited for the lock.
        if let Some(key) = self.key(kid) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_replace().await {
            tracing::warn!(error = %format!("{e:#}"), "cannot fetch the token keys; verifying with the cached ones");
        }
        self.key(kid)
    }

    /// Verifies the value of an `authorization` metadata entry (`Bearer <token>`).
    pub async fn verify_authorization(&self, value: Option<&str>) -> Result<Caller, AuthError> {
        let value = value.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim()).await
    }

    /// Verifies a token and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        if let Some(caller) = self.cached(&digest, now) {
            return Ok(caller);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // An `alg` jsonwebtoken does not know (`none` among them) fails the header parse.
            ErrorKind::Json(_) if token.split('.').count() == 3 => AuthError::WrongAlgorithm,
            _ => AuthError::Malformed,
        })?;
        if header.alg != Algorithm::ES256 {
            return Err(AuthError::WrongAlgorithm);
        }
        let kid = header.kid.ok_or(AuthError::MissingKid)?;
        let key = self
            .key_or_refetch(&kid)
            .await
            .ok_or(AuthError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    AuthError::WrongIssuerOrAudience
                }
                ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                    "exp" => AuthError::BadClaim("exp"),
                    "iss" => AuthError::BadClaim("iss"),
                    "aud" => AuthError::BadClaim("aud"),
                    _ => AuthError::BadClaim("sub"),
                },
                _ => AuthError::Malformed,
            }
        })?;
        let claims = data.claims;
        // jsonwebtoken still accepts a token in the very second of its `exp`; the cache does
        // not (`now < exp`): one rule for both paths.
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        let user_id = uuid::Uuid::parse_str(&claims.sub).map_err(|_| AuthError::BadClaim("sub"))?;
        let role = if claims.roles.iter().any(|r| r == Role::Staff.as_str()) {
            Role::Staff
        } else if claims.roles.iter().any(|r| r == Role::Customer.as_str()) {
            Role::Customer
        } else {
            return Err(AuthError::BadClaim("roles"));
        };
        let caller = Caller { user_id, role };
        self.remember(
            digest,
            Verified {
                caller,
                exp: claims.exp,
                kid: kid.into(),
            },
            now,
        );
        Ok(caller)
    }

    fn cached(&self, digest: &[u8; 32], now: i64) -> Option<Caller> {
        let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        // `exp` is the last valid second's end: the same rule as the check without leeway.
        cache
            .get(digest)
            .filter(|verified| now < verified.exp)
            .map(|verified| verified.caller)
    }

    fn remember(&self, digest: [u8; 32], verified: Verified, now: i64) {
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, v| now < v.exp);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(digest, verified);
    }
}

/// A fixed key set: for tests and for tools that already hold the keys.
#[derive(Debug, Clone)]
pub struct StaticKeys(pub JwkSet);

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
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
        let hs256 = jsonwebtoken::encode(&hs, &c, &jsonwebtoken::EncodingKey::from_secret(&secret))
            .unwrap();
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
}
