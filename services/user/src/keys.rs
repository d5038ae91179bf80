//! The user service's signing keys, kept in its database so that tokens survive a restart
//! and every replica signs with the same key.
//!
//! - At start, [`ensure_signing_key`] makes one if there is none (replicas starting together
//!   serialise on an advisory lock, so only one key is made).
//! - The newest key that is not retired signs ([`current`]).
//! - [`rotate`] adds a key that signs from then on and retires the others; a retired key is
//!   still published (so its tokens verify) until `retired_at + token TTL + skew`, then
//!   [`rotate`] or [`prune`] deletes it.
//! - [`revoke`] removes a key at once (a leaked one): it is no longer published, so every
//!   verifier stops accepting its tokens at its next refresh; if it signed, a new key signs.
//! - [`published`] is the JWK Set: every key that may still have live tokens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use shop_shared::auth::{Jwk, JwkSet, KeySource, SigningKey};
use sqlx::PgPool;

/// Clocks of the services may disagree by this much: a retired key stays published this long
/// after its last token's `exp`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The advisory lock that serialises key creation and rotation.
const KEYS_LOCK: i64 = 0x5348_4f50_4b45_5953; // "SHOPKEYS"

/// Makes sure a signing key exists; returns the one that signs.
pub async fn ensure_signing_key(pool: &PgPool) -> anyhow::Result<SigningKey> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    let existing = sqlx::query_scalar!(
        "SELECT private_key FROM signing_keys WHERE retired_at IS NULL \
         ORDER BY created_at DESC LIMIT 1"
    )
    .fetch_optional(&mut *tx)
    .await?;
    let key = match existing {
        Some(der) => SigningKey::from_pkcs8(&der)?,
        None => {
            let key = insert_new_key(&mut tx).await?;
            tracing::info!(kid = key.kid(), "created the first token signing key");
            key
        }
    };
    tx.commit().await?;
    Ok(key)
}

async fn insert_new_key(conn: &mut sqlx::PgConnection) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate()?;
    let jwk = key.public_jwk();
    sqlx::query!(
        "INSERT INTO signing_keys (kid, private_key, public_x, public_y) VALUES ($1, $2, $3, $4)",
        key.kid(),
        key.pkcs8_der(),
        jwk.x,
        jwk.y,
    )
    .execute(conn)
    .await?;
    Ok(key)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key that signs from now on.
    pub new_kid: String,
    /// Keys retired now (still published until their tokens expired).
    pub retired: Vec<String>,
    /// Keys deleted because their last token has expired.
    pub dropped: Vec<String>,
}

/// Adds a key that signs from now on, retires the others, and deletes the retired keys
/// whose tokens have all expired (`token_ttl` after their retirement, plus [`CLOCK_SKEW`]).
pub async fn rotate(pool: &PgPool, token_ttl: Duration) -> anyhow::Result<Rotation> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    let retired = sqlx::query_scalar!(
        "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL RETURNING kid"
    )
    .fetch_all(&mut *tx)
    .await?;
    let key = insert_new_key(&mut tx).await?;
    let dropped = prune_in(&mut tx, token_ttl).await?;
    tx.commit().await?;
    Ok(Rotation {
        new_kid: key.kid().to_owned(),
        retired,
        dropped,
    })
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The key removed.
    pub revoked: String,
    /// The key made to sign from now on, when the revoked one was the last that signed.
    pub new_kid: Option<String>,
}

/// Removes the key `kid` at once, retired or not: it leaves the JWK Set, and every verifier
/// drops it and the tokens it verified with it at its next refresh (`AUTH_JWKS_REFRESH_S`).
/// When no key is left to sign, a new one is made in the same transaction, so Login never
/// signs with a revoked key. `None` when no key has that `kid`.
pub async fn revoke(pool: &PgPool, kid: &str) -> anyhow::Result<Option<Revocation>> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query_scalar!("DELETE FROM signing_keys WHERE kid = $1 RETURNING kid", kid)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(revoked) = deleted else {
        return Ok(None);
    };
    let signing = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM signing_keys WHERE retired_at IS NULL"#
    )
    .fetch_one(&mut *tx)
    .await?;
    let new_kid = if signing == 0 {
        Some(insert_new_key(&mut tx).await?.kid().to_owned())
    } else {
        None
    };
    tx.commit().await?;
    Ok(Some(Revocation { revoked, new_kid }))
}

/// Deletes the retired keys whose tokens have all expired; returns their `kid`s.
pub async fn prune(pool: &PgPool, token_ttl: Duration) -> anyhow::Result<Vec<String>> {
    let mut conn = pool.acquire().await?;
    prune_in(&mut conn, token_ttl).await
}

async fn prune_in(
    conn: &mut sqlx::PgConnection,
    token_ttl: Duration,
) -> anyhow::Result<Vec<String>> {
    let horizon = (token_ttl + CLOCK_SKEW).as_secs_f64();
    Ok(sqlx::query_scalar!(
        "DELETE FROM signing_keys \
         WHERE retired_at IS NOT NULL AND retired_at < now() - make_interval(secs => $1) \
         RETURNING kid",
        horizon
    )
    .fetch_all(conn)
    .await?)
}

/// One key as listed by `shop keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id.
    pub kid: String,
    /// When it was made.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it stopped signing, if it did.
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every stored key, newest first.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<KeyInfo>> {
    Ok(sqlx::query_as!(
        KeyInfo,
        "SELECT kid, created_at, retired_at FROM signing_keys ORDER BY created_at DESC"
    )
    .fetch_all(pool)
    .await?)
}

/// The JWK Set: the public half of every key that may still have live tokens.
pub async fn published(pool: &PgPool, token_ttl: Duration) -> anyhow::Result<JwkSet> {
    let horizon = (token_ttl + CLOCK_SKEW).as_secs_f64();
    let rows = sqlx::query!(
        "SELECT kid, public_x, public_y FROM signing_keys \
         WHERE retired_at IS NULL OR retired_at >= now() - make_interval(secs => $1) \
         ORDER BY created_at DESC",
        horizon
    )
    .fetch_all(pool)
    .await?;
    let keys = rows
        .into_iter()
        .filter_map(|row| {
            let jwk = Jwk::p256(
                &B64.decode(&row.public_x).ok()?,
                &B64.decode(&row.public_y).ok()?,
            );
            // The stored kid is the thumbprint of the stored coordinates: anything else is a
            // corrupted row, better left out than published.
            (jwk.kid == row.kid).then_some(jwk)
        })
        .collect();
    Ok(JwkSet { keys })
}

/// The key that signs now, parsed once per `kid` (a rotation by another process is picked up
/// on the next Login).
#[derive(Debug, Clone, Default)]
pub struct CurrentKey(Arc<Mutex<Option<Arc<SigningKey>>>>);

impl CurrentKey {
    /// Starts with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self(Arc::new(Mutex::new(Some(Arc::new(key)))))
    }

    /// The newest key that is not retired.
    pub async fn get(&self, pool: &PgPool) -> anyhow::Result<Arc<SigningKey>> {
        let row = sqlx::query!(
            "SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC LIMIT 1"
        )
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no signing key: the user service makes one at start"))?;
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cached.as_ref().filter(|k| k.kid() == row.kid) {
            return Ok(key.clone());
        }
        let key = Arc::new(SigningKey::from_pkcs8(&row.private_key)?);
        *cached = Some(key.clone());
        Ok(key)
    }
}

/// The user service verifies tokens against its own database (the same keys it publishes).
#[derive(Debug, Clone)]
pub struct DatabaseKeys {
    /// The user database.
    pub pool: PgPool,
    /// The token TTL (how long retired keys stay valid).
    pub token_ttl: Duration,
}

#[async_trait::async_trait]
impl KeySource for DatabaseKeys {
    async fn fetch(&self) -> anyhow::Result<JwkSet> {
        published(&self.pool, self.token_ttl).await
    }
}
