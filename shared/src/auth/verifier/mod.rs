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
        let user_id =
            crate::ids::UserId::parse(&claims.sub).map_err(|_| AuthError::BadClaim("sub"))?;
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
mod tests;
