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
const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` kept; a longer one is dropped (W3C lets a receiver drop it), so a
/// caller cannot make every event of a flow carry kilobytes (docs/contract.md, "Bounds").
pub const MAX_TRACESTATE_CHARS: usize = 512;
/// The most list members a kept `tracestate` may have (W3C's own limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The longest `traceparent` looked at (version 00 has 55 characters).
const MAX_TRACEPARENT_CHARS: usize = 256;

/// `raw` when it is a `tracestate` within the bounds above, in printable ASCII; `None`
/// (dropped) otherwise.
pub fn bounded_tracestate(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let kept = !raw.is_empty()
        && raw.len() <= MAX_TRACESTATE_CHARS
        && raw.split(',').count() <= MAX_TRACESTATE_MEMBERS
        && raw.bytes().all(|b| (0x20..0x7f).contains(&b));
    kept.then_some(raw)
}

/// `raw` when it has the W3C shape (`version-trace_id-parent_id-flags` in hex, more fields
/// only in a later version); `None` otherwise, and the flow starts a new trace.
pub fn well_formed_traceparent(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    if raw.len() > MAX_TRACEPARENT_CHARS {
        return None;
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = raw.split('-').collect();
    match parts.as_slice() {
        [version, trace_id, parent_id, flags, rest @ ..]
            if hex(version, 2)
                && hex(trace_id, 32)
                && hex(parent_id, 16)
                && hex(flags, 2)
                && (rest.is_empty() || *version != "00") =>
        {
            Some(raw)
        }
        _ => None,
    }
}

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
        let traceparent = extractor
            .get(TRACEPARENT)
            .and_then(well_formed_traceparent)
            .map(keep_only_known_flags);
        let tracestate = extractor.get(TRACESTATE).and_then(bounded_tracestate);
        self.inner.extract_with_context(
            cx,
            &WithTraceparent {
                inner: extractor,
                traceparent,
                tracestate,
            },
        )
    }

    fn fields(&self) -> FieldIter<'_> {
        self.inner.fields()
    }
}

/// `extractor` with its `traceparent` and `tracestate` replaced by what is kept of them.
struct WithTraceparent<'a> {
    inner: &'a dyn Extractor,
    traceparent: Option<String>,
    tracestate: Option<&'a str>,
}

impl Extractor for WithTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.traceparent.as_deref()
        } else if key.eq_ignore_ascii_case(TRACESTATE) {
            self.tracestate
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
    fn a_tracestate_over_its_bounds_is_dropped_and_the_trace_goes_on() {
        let member = |i: usize| format!("k{i}=v");
        let within = (0..32).map(member).collect::<Vec<_>>().join(",");
        assert_eq!(bounded_tracestate(&within), Some(within.as_str()));
        let members_33 = (0..33).map(member).collect::<Vec<_>>().join(",");
        assert_eq!(bounded_tracestate(&members_33), None);
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE_CHARS));
        assert_eq!(bounded_tracestate(&long), None);
        assert_eq!(bounded_tracestate("k=v\0"), None);

        let carrier = HashMap::from([
            (TRACEPARENT.to_owned(), format!("00-{TRACE}-{SPAN}-01")),
            (
                TRACESTATE.to_owned(),
                format!("k={}", "v".repeat(16 * 1024)),
            ),
        ]);
        let cx = LenientTraceContextPropagator::new().extract(&carrier);
        let span = cx.span().span_context().clone();
        assert!(span.is_valid(), "the trace is kept");
        assert_eq!(span.trace_state().header(), "", "its tracestate is not");
    }

    #[test]
    fn only_a_well_formed_traceparent_is_kept() {
        let good = format!("00-{TRACE}-{SPAN}-01");
        assert_eq!(well_formed_traceparent(&good), Some(good.as_str()));
        assert_eq!(well_formed_traceparent(&format!("{good}-extra")), None);
        assert!(well_formed_traceparent(&format!("cc-{TRACE}-{SPAN}-01-extra")).is_some());
        assert_eq!(
            well_formed_traceparent(&format!("00-{TRACE}-{SPAN}-0\0")),
            None
        );
        assert_eq!(well_formed_traceparent(&"0".repeat(10_000)), None);
    }

    #[test]
    fn the_plain_sdk_propagator_rejects_the_random_flag() {
        // Why this module exists; when the SDK accepts it, the wrapper can go.
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), format!("00-{TRACE}-{SPAN}-03"))]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        assert!(!cx.span().span_context().is_valid());
    }
}
