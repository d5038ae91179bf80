//! The unit tests of `envelope`.

use super::*;
use shop_proto::order::v1::{OrderCreated, OrderRejected};

fn context() -> EventContext {
    EventContext {
        correlation_id: "corr-1".into(),
        causation_id: Some("cause-1".into()),
        actor_id: Some("01900000-0000-7000-8000-00000000000a".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: None,
    }
}

#[test]
fn envelope_sets_every_property_of_the_contract() {
    let event = OrderCreated {
        order_id: "o-1".into(),
        ..Default::default()
    };
    let envelope = Envelope::new(&event, "order", &context());
    let p = envelope.properties(1_700_000_000);
    assert_eq!(
        p.kind().as_ref().unwrap().as_str(),
        "shop.order.v1.OrderCreated"
    );
    assert_eq!(p.content_type().as_ref().unwrap().as_str(), CONTENT_TYPE);
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(*p.timestamp(), Some(1_700_000_000));
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "order");
    assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "corr-1");
    let id = uuid::Uuid::parse_str(p.message_id().as_ref().unwrap().as_str()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let headers = p.headers().as_ref().unwrap();
    assert_eq!(
        header_str(headers, CAUSATION_ID).as_deref(),
        Some("cause-1")
    );
    assert!(
        header_str(headers, TRACEPARENT)
            .unwrap()
            .starts_with("00-0af7")
    );
    assert_eq!(
        header_str(headers, ACTOR_ID).as_deref(),
        Some("01900000-0000-7000-8000-00000000000a")
    );
    assert_eq!(envelope.routing_key, "order.created");
    let anonymous = Envelope::new(&event, "user", &EventContext::new_flow()).properties(1);
    let headers = anonymous.headers().as_ref().unwrap();
    assert_eq!(header_str(headers, ACTOR_ID), None);
}

#[test]
fn envelope_carries_the_cloud_events_attributes_in_binary_mode() {
    let event = OrderCreated {
        order_id: "o-7".into(),
        ..Default::default()
    };
    let mut envelope = Envelope::new(&event, "order", &context());
    envelope.staged_at = Some(
        chrono::DateTime::parse_from_rfc3339("2026-12-06T10:11:12.345678Z")
            .unwrap()
            .to_utc(),
    );
    let p = envelope.properties(1);
    let headers = p.headers().as_ref().unwrap();
    let ce = |key| header_str(headers, key);
    assert_eq!(ce(cloud_events::SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(ce(cloud_events::ID), Some(envelope.message_id.to_string()));
    assert_eq!(ce(cloud_events::SOURCE).as_deref(), Some("/shop/order"));
    assert_eq!(
        ce(cloud_events::TYPE).as_deref(),
        Some("shop.order.v1.OrderCreated")
    );
    assert_eq!(
        ce(cloud_events::TIME).as_deref(),
        Some("2026-12-06T10:11:12.345Z")
    );
    assert_eq!(ce(cloud_events::SUBJECT).as_deref(), Some("o-7"));
}

#[test]
fn decode_round_trips_and_rejects_the_wrong_type() {
    let event = OrderCreated {
        order_id: "o-1".into(),
        ..Default::default()
    };
    let envelope = Envelope::new(&event, "order", &context());
    let p = envelope.properties(1);
    assert_eq!(
        decode::<OrderCreated>(&p, &envelope.payload).unwrap(),
        event
    );
    assert!(matches!(
        decode::<OrderRejected>(&p, &envelope.payload),
        Err(DecodeError::WrongType { .. })
    ));
}

#[test]
fn decode_rejects_garbage_missing_ids_and_foreign_content_types() {
    let good = Envelope::new(&OrderCreated::default(), "order", &context()).properties(1);
    assert!(matches!(
        decode::<OrderCreated>(&good, &[0xff, 0xff, 0xff]),
        Err(DecodeError::Payload { .. })
    ));
    let no_id = good.clone().with_message_id("".into());
    assert_eq!(
        decode::<OrderCreated>(&no_id, &[]),
        Err(DecodeError::MissingMessageId)
    );
    let json = good.with_content_type("application/json".into());
    assert!(matches!(
        decode::<OrderCreated>(&json, &[]),
        Err(DecodeError::WrongContentType(_))
    ));
}

#[test]
fn incoming_meta_reads_retry_count_and_original_key() {
    let p = Envelope::new(&OrderCreated::default(), "order", &context()).properties(1);
    let p = with_headers(
        &p,
        [
            (RETRY_COUNT, AMQPValue::LongInt(3)),
            (ORIGINAL_ROUTING_KEY, long_string("order.created")),
        ],
    );
    let meta = IncomingMeta::read(&p, "t_inventory").unwrap();
    assert_eq!(meta.retry_count, 3);
    assert_eq!(meta.routing_key, "order.created");
    let child = meta.child_context();
    assert_eq!(
        child.causation_id.as_deref(),
        Some(meta.message_id.as_str())
    );
    assert_eq!(child.correlation_id, "corr-1");
    assert_eq!(
        child.actor_id,
        context().actor_id,
        "the actor rides with the flow"
    );
}
