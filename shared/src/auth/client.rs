//! The client side of authentication: sending `authorization: Bearer <token>`.

use std::sync::{Arc, RwLock};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

/// A client interceptor that sends the bearer token it holds (none until [`BearerToken::set`]);
/// clones share the token, so logging in once updates every client.
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl BearerToken {
    /// No token yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `token` from now on.
    pub fn set(&self, token: &str) -> Result<(), Status> {
        let value = bearer_value(token)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }

    /// Sends no token from now on.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = self.0.read().unwrap_or_else(|p| p.into_inner()).clone() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// The metadata value `Bearer <token>`.
pub fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, Status> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("a token must be printable ASCII"))
}

/// `request` with `authorization: Bearer <token>` added.
pub fn with_bearer<T>(mut request: Request<T>, token: &str) -> Result<Request<T>, Status> {
    request
        .metadata_mut()
        .insert("authorization", bearer_value(token)?);
    Ok(request)
}
