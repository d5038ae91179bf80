//! Carrying W3C trace context (`traceparent`, `tracestate`) across the wire: out of and into
//! gRPC metadata (HTTP headers) and AMQP headers, and to and from the strings the outbox stores;
//! and the flow's correlation id a caller sends (`x-correlation-id`).

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The metadata key carrying the flow's correlation id (also the AMQP `correlation_id`).
pub const CORRELATION_ID: &str = "x-correlation-id";

/// The correlation id a caller sent (`x-correlation-id`), if it is usable.
pub fn correlation_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    correlation_id_from_headers(metadata.as_ref())
}

/// [`correlation_id`] from raw HTTP headers.
pub fn correlation_id_from_headers(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

/// Reads trace context from HTTP headers (gRPC metadata).
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes trace context into HTTP headers (gRPC metadata).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The W3C fields of a context, as stored in the outbox and sent in AMQP headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFields {
    /// `traceparent`.
    pub traceparent: Option<String>,
    /// `tracestate`.
    pub tracestate: Option<String>,
}

impl Extractor for TraceFields {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[derive(Default)]
struct MapInjector(HashMap<String, String>);

impl Injector for MapInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl TraceFields {
    /// The fields of `cx`'s span (empty when it has no valid span).
    pub fn from_context(cx: &Context) -> Self {
        if !cx.span().span_context().is_valid() {
            return Self::default();
        }
        let mut map = MapInjector::default();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut map));
        Self {
            traceparent: map.0.remove("traceparent"),
            tracestate: map.0.remove("tracestate").filter(|s| !s.is_empty()),
        }
    }

    /// The fields of the current `tracing` span.
    pub fn current() -> Self {
        Self::from_context(&tracing::Span::current().context())
    }

    /// The context these fields describe (a remote parent), or an empty one.
    pub fn to_context(&self) -> Context {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(self))
    }
}

/// The trace id of a span, as 32 hex digits, when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Makes `cx` the parent of `span` (a span extracted from a header continues that trace;
/// without one, the span starts a new trace) and records its trace id in the span's
/// `trace_id` field, so every log line inside shows it.
pub fn continue_trace(span: &tracing::Span, cx: Context) {
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}
