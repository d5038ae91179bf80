//! Authentication, written once for every service: ES256 access tokens (what Login issues and
//! every protected RPC needs), the JWK Set that publishes their public keys, the verifier
//! that checks them with public keys only, and the tower layer that rejects a call without a
//! valid token before its handler runs (docs/contract.md, "Authentication and authorization").
//!
//! Who may do what is not decided here: the layer hands each handler a typed [`Caller`] and
//! each service's use-case functions authorize it.
//!
//! # Layout
//! - [`claims`] — the token's claims, issuer and audience.
//! - [`keys`] — P-256 signing keys, their `kid`, and the JWK Set format.
//! - [`verifier`] — checking a token: ES256 pinned, keys from a [`verifier::KeySource`]
//!   (the JWKS over HTTP, or the user service's own database), a cache of verified tokens.
//! - [`jwks_client`] — fetching a JWK Set over HTTP.
//! - [`layer`] — the server layer: `authorization: Bearer …` → [`Caller`] or UNAUTHENTICATED.
//! - [`client`] — the client side: an interceptor that sends a bearer token.

pub mod claims;
pub mod client;
pub mod jwks_client;
pub mod keys;
pub mod layer;
pub mod verifier;

pub use claims::{AUDIENCE, Claims, ISSUER};
pub use client::BearerToken;
pub use keys::{Jwk, JwkSet, SigningKey};
pub use layer::{AuthLayer, PublicMethods};
pub use verifier::{AuthError, KeySource, Verifier};

use tonic::{Request, Status};

use crate::ids::UserId;

/// What a caller may be, from the token's `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A customer: acts on their own user, orders and notifications.
    Customer,
    /// Staff: may do everything (docs/contract.md's table).
    Staff,
}

impl Role {
    /// The claim value: `customer` or `staff`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
        }
    }

    /// Parses a stored or claimed role.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "customer" => Some(Role::Customer),
            "staff" => Some(Role::Staff),
            _ => None,
        }
    }
}

/// The authenticated caller of an RPC: who (`sub`) and with which role. The auth layer puts
/// it in the request's extensions; handlers take it with [`caller`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's `user_id`.
    pub user_id: UserId,
    /// Customer or staff.
    pub role: Role,
}

impl Caller {
    /// Whether the caller is staff.
    pub fn is_staff(&self) -> bool {
        self.role == Role::Staff
    }

    /// Whether the caller may act for `user_id`: it is them, or they are staff.
    pub fn may_act_for(&self, user_id: impl Into<UserId>) -> bool {
        self.is_staff() || self.user_id == user_id.into()
    }
}

/// The caller the auth layer verified for this request. A protected RPC always has one (the
/// layer rejects the call otherwise); its absence means the server was built without the
/// layer, which is answered UNAUTHENTICATED rather than trusted.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("this call needs `authorization: Bearer <token>`"))
}
