//! Fuzzing the way from a delivery to a typed event (proptest): whatever a publisher puts in
//! the properties, the headers and the body, reading them never panics, and what is accepted
//! is storable and within the bounds of docs/contract.md ("Bounds").

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use shop_proto::order::v1::OrderCreated;

use super::envelope::{
    ACTOR_ID, IncomingMeta, MAX_STORED_ID_CHARS, RETRY_COUNT, TRACEPARENT, TRACESTATE, decode_body,
};
use crate::telemetry::w3c::{MAX_TRACESTATE_CHARS, MAX_TRACESTATE_MEMBERS};

/// Any text, control characters and NUL included, weighted towards the dangerous ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,300}",
        "[a-z0-9\\-,=\u{0}\n\u{1b}]{0,40}",
        Just(String::new()),
        "00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]",
    ]
}

fn header() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        text().prop_map(|s| AMQPValue::LongString(LongString::from(s))),
        proptest::collection::vec(any::<u8>(), 0..600)
            .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
    ]
}

prop_compose! {
    fn properties()(
        message_id in proptest::option::of(text()),
        kind in proptest::option::of(text()),
        correlation_id in proptest::option::of(text()),
        content_type in proptest::option::of(prop_oneof![
            Just("application/x-protobuf".to_owned()),
            text(),
        ]),
        actor in proptest::option::of(header()),
        traceparent in proptest::option::of(header()),
        tracestate in proptest::option::of(header()),
        retry in proptest::option::of(header()),
    ) -> BasicProperties {
        let mut p = BasicProperties::default();
        if let Some(v) = message_id { p = p.with_message_id(ShortString::from(v)); }
        if let Some(v) = kind { p = p.with_type(ShortString::from(v)); }
        if let Some(v) = correlation_id { p = p.with_correlation_id(ShortString::from(v)); }
        if let Some(v) = content_type { p = p.with_content_type(ShortString::from(v)); }
        let mut headers = FieldTable::default();
        for (key, value) in [(ACTOR_ID, actor), (TRACEPARENT, traceparent), (TRACESTATE, tracestate), (RETRY_COUNT, retry)] {
            if let Some(value) = value {
                headers.insert(ShortString::from(key), value);
            }
        }
        p.with_headers(headers)
    }
}

fn storable(value: &str) -> bool {
    value.chars().count() <= MAX_STORED_ID_CHARS && !value.chars().any(char::is_control)
}

proptest! {
    #[test]
    fn reading_any_delivery_never_panics_and_keeps_only_what_can_be_stored(
        p in properties(),
        key in text(),
    ) {
        if let Ok(meta) = IncomingMeta::read(&p, &key) {
            prop_assert!(!meta.message_id.is_empty() && storable(&meta.message_id));
            prop_assert!(storable(&meta.correlation_id));
            prop_assert!(meta.actor_id.as_deref().is_none_or(storable));
            if let Some(state) = &meta.tracestate {
                prop_assert!(state.len() <= MAX_TRACESTATE_CHARS);
                prop_assert!(state.split(',').count() <= MAX_TRACESTATE_MEMBERS);
            }
            if let Some(parent) = &meta.traceparent {
                prop_assert!(parent.split('-').count() >= 4 && parent.is_ascii());
            }
        }
    }

    #[test]
    fn decoding_any_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_body::<OrderCreated>(&body);
    }
}
