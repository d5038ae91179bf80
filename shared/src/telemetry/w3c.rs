//! The W3C trace-context propagator shop installs: the SDK's, made lenient about trace flags.
//!
//! W3C Trace Context Level 2 adds the `random` flag (0x02), and current OpenTelemetry SDKs set
//! it: Python 1.45 sends `traceparent: 00-…-…-03`. opentelemetry-sdk 0.31 rejects any
//! version-00 header whose flags exceed 0x02, so a Python or Node caller's trace would silently
//! restart at our services. The specification asks receivers to ignore flags they do not know,
//! which is what this wrapper does before delegating: it keeps only the `sampled` bit.

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "traceparent";

/// [`TraceContextPropagator`] that accepts every trace flag a W3C sender may set.
#[derive(Debug, Default)]
pub struct LenientTraceContextPropagator {
    inner: TraceContextPropagator,
}

impl LenientTraceContextPropagator {
    /// A new propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TextMapPropagator for LenientTraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.inner.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let traceparent = extractor.get(TRACEPARENT).map(keep_only_known_flags);
        self.inner.extract_with_context(
            cx,
            &WithTraceparent {
                inner: extractor,
                traceparent,
            },
        )
    }

    fn fields(&self) -> FieldIter<'_> {
        self.inner.fields()
    }
}

/// `extractor` with its `traceparent` replaced.
struct WithTraceparent<'a> {
    inner: &'a dyn Extractor,
    traceparent: Option<String>,
}

impl Extractor for WithTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.traceparent.as_deref()
        } else {
            self.inner.get(key)
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.inner.keys()
    }
}

/// A version-00 `traceparent` with every flag but `sampled` cleared; anything else unchanged
/// (the SDK then judges it as before).
fn keep_only_known_flags(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    match parts.as_slice() {
        ["00", trace_id, span_id, flags] if flags.len() == 2 => {
            match u8::from_str_radix(flags, 16) {
                Ok(flags) => format!("00-{trace_id}-{span_id}-{:02x}", flags & 0x01),
                Err(_) => traceparent.to_owned(),
            }
        }
        _ => traceparent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::TraceContextExt as _;

    use super::*;

    fn extract(traceparent: &str) -> opentelemetry::trace::SpanContext {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        LenientTraceContextPropagator::new()
            .extract(&carrier)
            .span()
            .span_context()
            .clone()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn a_level_2_random_flag_does_not_break_the_trace() {
        let sampled_random = extract(&format!("00-{TRACE}-{SPAN}-03"));
        assert!(sampled_random.is_valid() && sampled_random.is_remote());
        assert_eq!(sampled_random.trace_id().to_string(), TRACE);
        assert_eq!(sampled_random.span_id().to_string(), SPAN);
        assert!(sampled_random.is_sampled());

        let random_only = extract(&format!("00-{TRACE}-{SPAN}-02"));
        assert!(random_only.is_valid() && !random_only.is_sampled());
    }

    #[test]
    fn the_sdk_still_judges_everything_else() {
        assert!(extract(&format!("00-{TRACE}-{SPAN}-01")).is_sampled());
        assert!(!extract(&format!("00-{TRACE}-{SPAN}-zz")).is_valid());
        assert!(!extract(&format!("00-{}-{SPAN}-01", "0".repeat(32))).is_valid());
        assert!(!extract("garbage").is_valid());
    }

    #[test]
    fn the_plain_sdk_propagator_rejects_the_random_flag() {
        // Why this module exists; when the SDK accepts it, the wrapper can go.
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), format!("00-{TRACE}-{SPAN}-03"))]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        assert!(!cx.span().span_context().is_valid());
    }
}
