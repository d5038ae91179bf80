//! The tower layer every gRPC server runs requests through: it continues the caller's trace
//! (W3C `traceparent`/`tracestate` in the metadata, or starts a new trace when there is
//! none), runs the call in a server span named and attributed per the OpenTelemetry RPC
//! conventions, and makes sure the call has a correlation id (`x-correlation-id`, minted
//! when absent) that the handler and every log line inside it see.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Instrument as _;

use super::propagation::{HeaderExtractor, continue_trace};
use crate::grpc::CORRELATION_ID;

/// Wraps a gRPC server's routes in [`GrpcTrace`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        // Health probes and reflection are not part of any business flow.
        if path.starts_with("grpc.health.") || path.starts_with("grpc.reflection.") {
            return Box::pin(self.inner.call(request));
        }
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let correlation_id = crate::grpc::correlation_id_from_headers(request.headers())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if let Ok(value) = http::HeaderValue::from_str(&correlation_id) {
            request.headers_mut().insert(CORRELATION_ID, value);
        }
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            shop.service = %short_service(service),
            trace_id = tracing::field::Empty,
            correlation_id = %correlation_id,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        continue_trace(&span, parent);
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let mut result = call.await;
                if let Ok(response) = &mut result {
                    resource_exhausted_for_oversized(response);
                }
                if let Ok(response) = &result {
                    // Errors travel as trailers-only responses: the status is in the headers.
                    // A response without it succeeded (its status 0 follows in the trailers).
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0);
                    let span = tracing::Span::current();
                    span.record("rpc.grpc.status_code", code);
                    if code != 0 {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// tonic answers a request above the size limit with OUT_OF_RANGE; CONTRACT-wise (and in
/// every other gRPC implementation) that is RESOURCE_EXHAUSTED. No shop handler returns
/// OUT_OF_RANGE, so the code is rewritten on the (trailers-only) error response.
fn resource_exhausted_for_oversized<B>(response: &mut http::Response<B>) {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    if out_of_range {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

/// `shop.order.v1.OrderService` → `order`.
fn short_service(service: &str) -> &str {
    service
        .strip_prefix("shop.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_service_names_the_domain() {
        assert_eq!(short_service("shop.order.v1.OrderService"), "order");
        assert_eq!(short_service("other.Service"), "other.Service");
    }
}
