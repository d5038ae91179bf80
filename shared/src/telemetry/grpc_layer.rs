//! The tower layer every gRPC server runs requests through: it continues the caller's trace
//! (W3C `traceparent`/`tracestate` in the metadata, or starts a new trace when there is
//! none), runs the call in a server span named and attributed per the OpenTelemetry RPC
//! conventions, and makes sure the call has a correlation id (`x-correlation-id`, minted
//! when absent) that the handler and every log line inside it see. Every call it sees, health
//! and reflection included, is timed into `rpc_server_call_duration_seconds`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument as _;

use super::propagation::{HeaderExtractor, continue_trace};
use crate::metrics::Metrics;
use crate::telemetry::propagation::{CORRELATION_ID, correlation_id_from_headers};

/// Wraps a gRPC server's routes in [`GrpcTrace`].
#[derive(Debug, Clone)]
pub struct GrpcTraceLayer {
    metrics: Metrics,
}

impl GrpcTraceLayer {
    /// Traces every call and times it into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct GrpcTrace<S> {
    inner: S,
    metrics: Metrics,
}

/// The label of a service or method no server of shop serves (the OpenTelemetry convention),
/// so a caller probing random paths cannot grow the metrics without bound.
const OTHER: &str = "_OTHER";

/// Every `service/method` of the contracts, health and reflection.
fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: HashSet<String> = [
            "grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Watch",
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        if let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(
            shop_proto::FILE_DESCRIPTOR_SET,
        ) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    })
}

/// The metric labels of a call's path: itself when shop knows it, `_OTHER` otherwise.
fn rpc_labels(path: &str) -> (&str, &str) {
    match path.split_once('/') {
        Some((service, method)) if known_methods().contains(path) => (service, method),
        _ => (OTHER, OTHER),
    }
}

/// The status of a response: errors travel as trailers-only responses with the status in the
/// headers; a response without it succeeded (its status 0 follows in the trailers).
fn status_code<B>(response: &http::Response<B>) -> i64 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
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
        let started = Instant::now();
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let metrics = self.metrics.clone();
        // Health probes and reflection are not part of any business flow: timed, not traced.
        if path.starts_with("grpc.health.") || path.starts_with("grpc.reflection.") {
            let call = self.inner.call(request);
            return Box::pin(async move {
                let result = call.await;
                if let Ok(response) = &result {
                    let (service, method) = rpc_labels(&path);
                    metrics.rpc_answered(service, method, status_code(response), started.elapsed());
                }
                result
            });
        }
        let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
        let correlation_id = correlation_id_from_headers(request.headers())
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
            shop.service = %metrics.service(),
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
                    let code = status_code(response);
                    let (service, method) = rpc_labels(&path);
                    metrics.rpc_answered(service, method, code, started.elapsed());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_label_the_metrics() {
        assert_eq!(
            rpc_labels("shop.order.v1.OrderService/CreateOrder"),
            ("shop.order.v1.OrderService", "CreateOrder")
        );
        assert_eq!(
            rpc_labels("grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            rpc_labels("shop.order.v1.OrderService/Nope"),
            (OTHER, OTHER)
        );
        assert_eq!(rpc_labels("random"), (OTHER, OTHER));
    }
}
