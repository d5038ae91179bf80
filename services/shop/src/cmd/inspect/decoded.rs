//! A message as a person reads it: the body decoded with the contract's descriptor set into
//! proto3 JSON (the mapping the polyglot examples print: camelCase names, 64-bit integers as
//! strings, default values left out), the headers as JSON, and the ids and the trace id pulled
//! out of the properties. `shop dlq` and `shop events tail` show messages through this one view.

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Map, Value, json};
use shop_shared::messaging::envelope;

/// Decodes bodies by their `type` property, with every message type of the contract.
#[derive(Debug, Clone)]
pub struct Decoder {
    pool: DescriptorPool,
}

/// A body as JSON, or why it is not.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBody {
    /// The proto3 JSON of the body, `null` when it does not decode.
    pub json: Value,
    /// Why it does not decode (unknown type, invalid bytes), `None` when it does.
    pub error: Option<String>,
}

impl Decoder {
    /// A decoder over the descriptor set compiled into this binary.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            pool: DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)?,
        })
    }

    /// Decodes `body` as the message named `type_name`.
    pub fn body(&self, type_name: Option<&str>, body: &[u8]) -> DecodedBody {
        let failed = |error: String| DecodedBody {
            json: Value::Null,
            error: Some(error),
        };
        let Some(type_name) = type_name.filter(|t| !t.is_empty()) else {
            return failed("the message has no type property".into());
        };
        let Some(descriptor) = self.pool.get_message_by_name(type_name) else {
            return failed(format!("{type_name} is not a message type of the contract"));
        };
        match DynamicMessage::decode(descriptor, body) {
            Ok(message) => match serde_json::to_value(&message) {
                Ok(json) => DecodedBody { json, error: None },
                Err(e) => failed(format!("the body does not map to JSON: {e}")),
            },
            Err(e) => failed(format!("the body is not a valid {type_name}: {e}")),
        }
    }
}

/// What every view of a message shows, read off its properties.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageView {
    /// `message_id`.
    pub message_id: Option<String>,
    /// `type`.
    pub message_type: Option<String>,
    /// The routing key it was published with (`x-original-routing-key` on copies).
    pub routing_key: String,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// Header `x-causation-id`.
    pub causation_id: Option<String>,
    /// Header `x-actor-id`.
    pub actor_id: Option<String>,
    /// The trace id of header `traceparent`.
    pub trace_id: Option<String>,
    /// `app_id`.
    pub app_id: Option<String>,
    /// The `timestamp` property: when it was published.
    pub published_at: Option<DateTime<Utc>>,
    /// Every header, as JSON.
    pub headers: Map<String, Value>,
}

impl MessageView {
    /// Reads a delivery's properties; `routing_key` is the one it was delivered with.
    pub fn read(properties: &BasicProperties, routing_key: &str) -> Self {
        let headers = properties.headers().clone().unwrap_or_default();
        let header = |key: &str| envelope::header_str(&headers, key).filter(|v| !v.is_empty());
        let property = |value: &Option<lapin::types::ShortString>| {
            value
                .as_ref()
                .map(|v| v.as_str().to_owned())
                .filter(|v| !v.is_empty())
        };
        Self {
            message_id: property(properties.message_id()),
            message_type: property(properties.kind()),
            routing_key: header(envelope::ORIGINAL_ROUTING_KEY)
                .or_else(|| broker_death(&headers).and_then(|d| d.routing_key))
                .unwrap_or_else(|| routing_key.to_owned()),
            correlation_id: property(properties.correlation_id()),
            causation_id: header(envelope::CAUSATION_ID),
            actor_id: header(envelope::ACTOR_ID),
            trace_id: header(envelope::TRACEPARENT).and_then(|t| trace_id(&t)),
            app_id: property(properties.app_id()),
            published_at: properties
                .timestamp()
                .and_then(|s| i64::try_from(s).ok())
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            headers: headers_json(&headers),
        }
    }

    /// The fields every JSON line carries, in one object.
    pub fn json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (key, value) in [
            ("message_id", &self.message_id),
            ("type", &self.message_type),
            ("correlation_id", &self.correlation_id),
            ("causation_id", &self.causation_id),
            ("trace_id", &self.trace_id),
            ("actor_id", &self.actor_id),
            ("app_id", &self.app_id),
        ] {
            out.insert(key.into(), json!(value));
        }
        out.insert("routing_key".into(), json!(self.routing_key));
        out.insert("published_at".into(), json!(self.published_at.map(rfc3339)));
        out.insert("headers".into(), Value::Object(self.headers.clone()));
        out
    }
}

/// What the broker wrote in `x-death` when it dead-lettered a message itself (a consumer
/// rejected it, or its delivery limit was reached): the most recent death comes first.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerDeath {
    /// `reason`: `rejected`, `expired`, `maxlen` or `delivery_limit`.
    pub reason: Option<String>,
    /// `time`.
    pub time: Option<DateTime<Utc>>,
    /// The first of `routing-keys`.
    pub routing_key: Option<String>,
    /// `queue`: where it died.
    pub queue: Option<String>,
}

/// The most recent entry of header `x-death`, if the broker dead-lettered the message.
pub fn broker_death(headers: &FieldTable) -> Option<BrokerDeath> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    let routing_key = match death.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(value_str),
        _ => None,
    };
    Some(BrokerDeath {
        reason: death.inner().get("reason").and_then(value_str),
        time: match death.inner().get("time") {
            Some(AMQPValue::Timestamp(s)) => i64::try_from(*s)
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            _ => None,
        },
        routing_key,
        queue: death.inner().get("queue").and_then(value_str),
    })
}

fn value_str(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// Headers as a JSON object: strings as strings, numbers as numbers, timestamps as RFC 3339,
/// bytes as hex, nested tables and arrays as JSON.
pub fn headers_json(headers: &FieldTable) -> Map<String, Value> {
    headers
        .inner()
        .iter()
        .map(|(key, value)| (key.as_str().to_owned(), value_json(value)))
        .collect()
}

fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(v) => json!(v),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(v) => json!(format!("{}e-{}", v.value, v.scale)),
        AMQPValue::ShortString(v) => json!(v.as_str()),
        AMQPValue::LongString(v) => json!(String::from_utf8_lossy(v.as_bytes())),
        AMQPValue::FieldArray(v) => Value::Array(v.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(v) => match i64::try_from(*v)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
        {
            Some(at) => json!(rfc3339(at)),
            None => json!(v),
        },
        AMQPValue::FieldTable(v) => Value::Object(headers_json(v)),
        AMQPValue::ByteArray(v) => json!(hex(v.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339, UTC, milliseconds: how every time is shown.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use shop_proto::order::v1::{LineItem, OrderCreated};

    #[test]
    fn a_body_decodes_into_the_proto3_json_mapping() {
        let event = OrderCreated {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            items: vec![LineItem {
                product_id: "p-1".into(),
                quantity: 2,
                unit_price_cents: 150,
            }],
            total_cents: 300,
            ..OrderCreated::default()
        };
        let decoded = Decoder::new()
            .expect("a decoder")
            .body(Some("shop.order.v1.OrderCreated"), &event.encode_to_vec());
        assert_eq!(decoded.error, None);
        assert_eq!(decoded.json["orderId"], "o-1");
        assert_eq!(decoded.json["items"][0]["productId"], "p-1");
        assert_eq!(decoded.json["items"][0]["quantity"], 2);
        // int64 travels as a string in proto3 JSON.
        assert_eq!(decoded.json["totalCents"], "300");
    }

    #[test]
    fn what_does_not_decode_says_why() {
        let decoder = Decoder::new().expect("a decoder");
        let garbage = decoder.body(Some("shop.order.v1.OrderCreated"), b"\xff\xff\xff");
        assert_eq!(garbage.json, Value::Null);
        assert!(garbage.error.expect("a reason").contains("not a valid"));
        let unknown = decoder.body(Some("acme.Thing"), b"");
        assert!(unknown.error.expect("a reason").contains("acme.Thing"));
        assert!(decoder.body(None, b"").error.is_some());
    }

    #[test]
    fn the_trace_id_is_the_second_field_of_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
