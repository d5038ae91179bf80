//! The claims of a shop access token (docs/contract.md): `iss` and `aud` are `shop`, `sub` is the
//! user's id, `iat`/`exp` in seconds since the epoch, `roles` is `["customer"]` or `["staff"]`.

use serde::{Deserialize, Serialize};

/// The issuer of every shop token.
pub const ISSUER: &str = "shop";
/// The audience of every shop token.
pub const AUDIENCE: &str = "shop";

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: [`ISSUER`].
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// Subject: the user's `user_id`.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// `["customer"]` or `["staff"]`.
    pub roles: Vec<String>,
}

impl Claims {
    /// The claims of a token for `user_id` with `role`, valid `ttl_secs` from `now_secs`.
    pub fn new(
        user_id: impl Into<crate::ids::UserId>,
        role: super::Role,
        now_secs: i64,
        ttl_secs: i64,
    ) -> Self {
        Self {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user_id.into().to_string(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            roles: vec![role.as_str().to_owned()],
        }
    }
}
