//! The server layer that authenticates every call before its handler runs: it reads
//! `authorization: Bearer <token>`, verifies the token ([`Verifier`]) and puts the
//! [`super::Caller`] in the request's extensions; a call without a valid token is answered
//! UNAUTHENTICATED without its body being read. Health, reflection and the methods a service
//! declares public (CreateUser, Login) pass without a token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::Verifier;

/// The methods of a server that need no token, as gRPC paths
/// (`/shop.user.v1.UserService/Login`). Health and reflection are always public.
#[derive(Debug, Clone, Default)]
pub struct PublicMethods(Arc<[&'static str]>);

impl PublicMethods {
    /// No public method besides health and reflection.
    pub fn none() -> Self {
        Self::default()
    }

    /// These paths are public.
    pub fn of(paths: &[&'static str]) -> Self {
        Self(paths.to_vec().into())
    }

    /// Whether `path` needs no token.
    pub fn contains(&self, path: &str) -> bool {
        path.starts_with("/grpc.health.")
            || path.starts_with("/grpc.reflection.")
            || self.0.contains(&path)
    }
}

/// Wraps a server's routes in [`Authenticate`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    public: PublicMethods,
    protected: Option<Arc<str>>,
}

impl AuthLayer {
    /// Authenticates every call but `public` with `verifier`.
    pub fn new(verifier: Arc<Verifier>, public: PublicMethods) -> Self {
        Self {
            verifier,
            public,
            protected: None,
        }
    }

    /// Only the methods of `service` (`shop.order.v1.OrderService`) need a token: a call
    /// to any other service reaches the server's answer that it is not served here (and
    /// where it is), instead of a misleading UNAUTHENTICATED.
    pub fn protecting(mut self, service: &str) -> Self {
        self.protected = Some(format!("/{service}/").into());
        self
    }

    /// The verifier the layer checks tokens with.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
            protected: self.protected.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    inner: S,
    verifier: Arc<Verifier>,
    public: PublicMethods,
    protected: Option<Arc<str>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let unprotected = self
            .protected
            .as_deref()
            .is_some_and(|own| !path.starts_with(own));
        if unprotected || self.public.contains(path) {
            return Box::pin(self.inner.call(request));
        }
        // The service that was polled ready serves this call; its clone serves the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or(""));
            match verifier.verify_authorization(header).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => {
                    tracing::debug!(reason = %error, "call refused: not authenticated");
                    Ok(tonic::Status::unauthenticated(error.to_string()).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reflection_and_declared_methods_are_public() {
        let public = PublicMethods::of(&["/shop.user.v1.UserService/Login"]);
        assert!(public.contains("/grpc.health.v1.Health/Check"));
        assert!(public.contains("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(public.contains("/shop.user.v1.UserService/Login"));
        assert!(!public.contains("/shop.user.v1.UserService/GetUser"));
        assert!(!PublicMethods::none().contains("/shop.user.v1.UserService/Login"));
    }
}
