//! P-256 signing keys and the JWK Set (RFC 7517) their public halves are published in.
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint (SHA-256 over the canonical public JWK), so
//! it names the key itself: two keys never share a `kid`, and anyone can recompute it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::Claims;

/// A private ES256 key with its `kid`. Its `Debug` never shows the private half.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("failed to generate a P-256 key"))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 DER encoding (how the user service stores it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("not a P-256 PKCS#8 key: {e}"))?;
        // An uncompressed SEC1 point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
        let point = pair.public_key().as_ref();
        anyhow::ensure!(
            point.len() == 65 && point[0] == 4,
            "unexpected P-256 public key encoding"
        );
        let public = Jwk::p256(&point[1..33], &point[33..65]);
        Ok(Self {
            kid: public.kid.clone(),
            pkcs8: pkcs8.to_vec(),
            encoding: EncodingKey::from_ec_der(pkcs8),
            public,
        })
    }

    /// The key's id, in the header of every token it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 DER encoding of the private key: for storage only, never for a log.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// Signs `claims` as an ES256 JWT with this key's `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("failed to sign a token: {e}"))
    }
}

/// One public key of a JWK Set: an EC P-256 key for ES256 signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`.
    pub kty: String,
    /// Curve: `P-256`.
    pub crv: String,
    /// The x coordinate, base64url without padding.
    pub x: String,
    /// The y coordinate, base64url without padding.
    pub y: String,
    /// The key id (the RFC 7638 thumbprint).
    pub kid: String,
    /// The algorithm: `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// What the key is for: `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The JWK of a P-256 public key from its coordinates.
    pub fn p256(x: &[u8], y: &[u8]) -> Self {
        let (x, y) = (B64.encode(x), B64.encode(y));
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = B64.encode(sha2::Sha256::digest(canonical.as_bytes()));
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x,
            y,
            kid,
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
        }
    }
}

/// A JWK Set: `{"keys": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_comes_back_with_the_same_kid() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(key.pkcs8_der()).unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(key.public_jwk(), again.public_jwk());
        assert_ne!(key.kid(), SigningKey::generate().unwrap().kid());
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        assert!(!shown.contains(&format!("{:?}", &key.pkcs8_der()[..8])));
    }

    #[test]
    fn the_jwk_serialises_as_rfc_7517() {
        let key = SigningKey::generate().unwrap();
        let json = serde_json::to_value(JwkSet {
            keys: vec![key.public_jwk().clone()],
        })
        .unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(B64.decode(jwk["x"].as_str().unwrap()).unwrap().len(), 32);
    }
}
