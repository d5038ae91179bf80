//! The wire format of an event: the AMQP properties and headers of docs/contract.md around a
//! binary protobuf body, and the way back from a delivery to a typed event.

use crate::telemetry::w3c::{bounded_tracestate, well_formed_traceparent};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use shop_proto::Event;

mod message_id;

pub use message_id::MessageId;

/// The content type of every event body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Header: W3C `traceparent` of the span that produced the event.
pub const TRACEPARENT: &str = "traceparent";
/// Header: W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";
/// Header: the `message_id` of the message that caused this one.
pub const CAUSATION_ID: &str = "x-causation-id";
/// Header: the `user_id` of the authenticated caller whose command started the flow.
pub const ACTOR_ID: &str = "x-actor-id";
/// Header on retried and dead-lettered copies: attempts that failed so far.
pub const RETRY_COUNT: &str = "x-retry-count";
/// Header on dead-lettered copies: why the message was dead-lettered.
pub const DEATH_REASON: &str = "x-death-reason";
/// Header on retried and dead-lettered copies: the routing key it was first published with.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
/// Header on dead-lettered copies: when the message was dead-lettered, RFC 3339 UTC with
/// milliseconds (what `shop dlq` shows as the time it died).
pub const DEATH_TIME: &str = "x-death-time";
/// Header on copies `shop dlq replay` sent back: how often the message was replayed.
pub const REPLAYED_COUNT: &str = "x-replayed-count";
/// Header on copies `shop dlq replay` sent back: when it was last replayed, RFC 3339 UTC.
pub const REPLAYED_AT: &str = "x-replayed-at";

/// CloudEvents 1.0 attributes in binary content mode, under the AMQP binding's `cloudEvents:`
/// prefix (docs/contract.md, Events): the body is the event's data, `content_type` its data
/// content type, and these headers carry the context attributes.
pub mod cloud_events {
    /// `specversion`: always `1.0`.
    pub const SPECVERSION: &str = "cloudEvents:specversion";
    /// `id`: the `message_id`.
    pub const ID: &str = "cloudEvents:id";
    /// `source`: `/shop/<app_id>`.
    pub const SOURCE: &str = "cloudEvents:source";
    /// `type`: the full protobuf name, as the `type` property.
    pub const TYPE: &str = "cloudEvents:type";
    /// `time`: when the event was staged, RFC 3339 UTC with milliseconds.
    pub const TIME: &str = "cloudEvents:time";
    /// `subject`: what the event is about (the order's or the user's id).
    pub const SUBJECT: &str = "cloudEvents:subject";
    /// The CloudEvents version shop sends.
    pub const VERSION: &str = "1.0";
}

/// Everything needed to publish one event: what the outbox row holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// UUID v7, unique per event.
    pub message_id: MessageId,
    /// Full protobuf message name (`type` property).
    pub message_type: String,
    /// Routing key on the topic exchange.
    pub routing_key: String,
    /// Binary protobuf encoding of the event.
    pub payload: Vec<u8>,
    /// Publishing service (`app_id` property).
    pub app_id: String,
    /// The business flow this event belongs to.
    pub correlation_id: String,
    /// The message that caused this one, if a message did.
    pub causation_id: Option<String>,
    /// The caller whose command started the flow (`x-actor-id`), if it had one.
    pub actor_id: Option<String>,
    /// W3C trace context of the producing span.
    pub traceparent: Option<String>,
    /// W3C trace state of the producing span.
    pub tracestate: Option<String>,
    /// What the event is about (CloudEvents `subject`): the `order_id` or the `user_id`;
    /// empty for none.
    pub subject: String,
    /// When the event was staged (CloudEvents `time`): the outbox row's time, read by the
    /// relay; `None` before the row exists (publishing then says now).
    pub staged_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Envelope {
    /// Wraps a typed event; ids and trace context come from `context`.
    pub fn new<E: Event>(event: &E, app_id: &str, context: &EventContext) -> Self {
        Self {
            message_id: MessageId::new(),
            message_type: E::TYPE_NAME.to_owned(),
            routing_key: E::ROUTING_KEY.to_owned(),
            payload: event.encode_to_vec(),
            app_id: app_id.to_owned(),
            correlation_id: context.correlation_id.clone(),
            causation_id: context.causation_id.clone(),
            actor_id: context.actor_id.clone(),
            traceparent: context.traceparent.clone(),
            tracestate: context.tracestate.clone(),
            subject: event.subject().to_owned(),
            staged_at: None,
        }
    }

    /// The AMQP properties of docs/contract.md: persistent, every id, type and header, the
    /// CloudEvents attributes included.
    pub fn properties(&self, timestamp_secs: u64) -> BasicProperties {
        let mut headers = FieldTable::default();
        let message_id = self.message_id.to_string();
        let time = self
            .staged_at
            .unwrap_or_else(chrono::Utc::now)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (key, value) in [
            (cloud_events::SPECVERSION, cloud_events::VERSION),
            (cloud_events::ID, &message_id),
            (cloud_events::SOURCE, &format!("/shop/{}", self.app_id)),
            (cloud_events::TYPE, &self.message_type),
            (cloud_events::TIME, &time),
        ] {
            headers.insert(key.into(), long_string(value));
        }
        if !self.subject.is_empty() {
            headers.insert(cloud_events::SUBJECT.into(), long_string(&self.subject));
        }
        for (key, value) in [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
            (CAUSATION_ID, &self.causation_id),
            (ACTOR_ID, &self.actor_id),
        ] {
            if let Some(value) = value {
                headers.insert(key.into(), long_string(value));
            }
        }
        BasicProperties::default()
            .with_message_id(message_id.into())
            .with_type(self.message_type.as_str().into())
            .with_content_type(CONTENT_TYPE.into())
            .with_timestamp(timestamp_secs)
            .with_app_id(self.app_id.as_str().into())
            .with_correlation_id(self.correlation_id.as_str().into())
            // 2 = persistent: written to disk by the broker (docs/contract.md, Events).
            .with_delivery_mode(2)
            .with_headers(headers)
    }
}

/// The ids and trace context an event is staged with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventContext {
    /// The flow's correlation id.
    pub correlation_id: String,
    /// The `message_id` of the message being handled, when a message caused this event.
    pub causation_id: Option<String>,
    /// The authenticated caller whose command started the flow (`x-actor-id`); `None` when
    /// the command had no caller (CreateUser).
    pub actor_id: Option<String>,
    /// W3C `traceparent` to continue.
    pub traceparent: Option<String>,
    /// W3C `tracestate` to continue.
    pub tracestate: Option<String>,
}

impl EventContext {
    /// A context for a flow that starts here, with a fresh correlation id.
    pub fn new_flow() -> Self {
        Self {
            correlation_id: uuid::Uuid::now_v7().to_string(),
            ..Self::default()
        }
    }

    /// A context for a flow with a known correlation id.
    pub fn with_correlation_id(correlation_id: impl Into<String>) -> Self {
        Self {
            correlation_id: correlation_id.into(),
            ..Self::default()
        }
    }
}

/// Why a delivery could not be turned into an event. Every variant is permanent: the message
/// goes to the dead-letter queue.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The delivery has no `message_id`, so it cannot be de-duplicated.
    #[error("the message has no message_id property")]
    MissingMessageId,
    /// The delivery has no `type` property.
    #[error("the message has no type property")]
    MissingType,
    /// The `type` names no event this consumer handles.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The `type` names another event than the one expected.
    #[error("expected message type {expected:?}, got {actual:?}")]
    WrongType {
        /// The type that was expected.
        expected: &'static str,
        /// The type the message says it is.
        actual: String,
    },
    /// The content type is not protobuf.
    #[error("content type {0:?} is not {CONTENT_TYPE}")]
    WrongContentType(String),
    /// A property or header the consumer must store (the `message_id`, the `correlation_id`,
    /// `x-actor-id`) holds what cannot be stored: a control character such as NUL, or too
    /// many characters.
    #[error("the {name} cannot be stored: {reason}")]
    Unstorable {
        /// Which property or header.
        name: &'static str,
        /// Why not (the value shown cut, never whole).
        reason: String,
    },
    /// The body does not decode as the message type.
    #[error("the body is not a valid {message_type}: {reason}")]
    Payload {
        /// The type the body was decoded as.
        message_type: String,
        /// What prost said.
        reason: String,
    },
}

/// What a consumer reads off a delivery before decoding its body.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMeta {
    /// The `message_id` property.
    pub message_id: String,
    /// The `type` property.
    pub message_type: String,
    /// The `correlation_id` property (empty when absent).
    pub correlation_id: String,
    /// The routing key it was first published with.
    pub routing_key: String,
    /// Failed attempts so far (header `x-retry-count`, 0 when absent).
    pub retry_count: u32,
    /// The flow's actor (header `x-actor-id`), passed on to the events this message causes.
    pub actor_id: Option<String>,
    /// W3C `traceparent` header.
    pub traceparent: Option<String>,
    /// W3C `tracestate` header.
    pub tracestate: Option<String>,
    /// When the event was staged (header `cloudEvents:time`), if it says so in RFC 3339.
    pub staged_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl IncomingMeta {
    /// Reads the properties and headers of a delivery, checking what every event must have.
    pub fn read(properties: &BasicProperties, routing_key: &str) -> Result<Self, DecodeError> {
        let headers = properties.headers().as_ref();
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or(DecodeError::MissingMessageId)?;
        let message_type = properties
            .kind()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or(DecodeError::MissingType)?;
        if let Some(ct) = properties.content_type()
            && ct.as_str() != CONTENT_TYPE
        {
            return Err(DecodeError::WrongContentType(ct.as_str().to_owned()));
        }
        let correlation_id = properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let actor_id = headers
            .and_then(|h| header_str(h, ACTOR_ID))
            .filter(|a| !a.is_empty());
        storable("message_id", &message_id)?;
        storable("correlation_id", &correlation_id)?;
        if let Some(actor_id) = &actor_id {
            storable("x-actor-id header", actor_id)?;
        }
        Ok(Self {
            message_id,
            message_type,
            correlation_id,
            routing_key: headers
                .and_then(|h| header_str(h, ORIGINAL_ROUTING_KEY))
                .unwrap_or_else(|| routing_key.to_owned()),
            retry_count: headers
                .and_then(|h| header_u32(h, RETRY_COUNT))
                .unwrap_or(0),
            actor_id,
            // Trace context out of bounds is dropped, never stored or passed on: the flow
            // starts a new trace, or goes on without the tracestate (docs/contract.md, "Bounds").
            traceparent: headers
                .and_then(|h| header_str(h, TRACEPARENT))
                .and_then(|t| well_formed_traceparent(&t).map(str::to_owned)),
            tracestate: headers
                .and_then(|h| header_str(h, TRACESTATE))
                .and_then(|t| bounded_tracestate(&t).map(str::to_owned)),
            // Only ever parsed, never stored: a timestamp is bounded by its own grammar.
            staged_at: headers
                .and_then(|h| header_str(h, cloud_events::TIME))
                .filter(|t| t.len() <= 64)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.to_utc()),
        })
    }

    /// The context for events staged while handling this message: same flow and actor,
    /// caused by it, continuing its trace unless the handler's span replaces it.
    pub fn child_context(&self) -> EventContext {
        EventContext {
            correlation_id: if self.correlation_id.is_empty() {
                self.message_id.clone()
            } else {
                self.correlation_id.clone()
            },
            causation_id: Some(self.message_id.clone()),
            actor_id: self.actor_id.clone(),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        }
    }
}

/// The most characters of a message-derived id the consumer stores (a `message_id` or a
/// `correlation_id` is a short string: at most 255 bytes anyway).
pub const MAX_STORED_ID_CHARS: usize = 255;

/// Whether a message-derived id can be stored: no control character (PostgreSQL refuses NUL in
/// text), at most [`MAX_STORED_ID_CHARS`].
fn storable(name: &'static str, value: &str) -> Result<(), DecodeError> {
    let reason = if value.chars().count() > MAX_STORED_ID_CHARS {
        format!("longer than {MAX_STORED_ID_CHARS} characters")
    } else if value.chars().any(char::is_control) {
        format!("{} holds a control character", crate::input::shown(value))
    } else {
        return Ok(());
    };
    Err(DecodeError::Unstorable { name, reason })
}

/// Decodes a delivery as event `E`, checking its properties first.
pub fn decode<E: Event>(properties: &BasicProperties, body: &[u8]) -> Result<E, DecodeError> {
    let meta = IncomingMeta::read(properties, "")?;
    if meta.message_type != E::TYPE_NAME {
        return Err(DecodeError::WrongType {
            expected: E::TYPE_NAME,
            actual: meta.message_type,
        });
    }
    decode_body(body)
}

/// Decodes a body as event `E`.
pub fn decode_body<E: Event>(body: &[u8]) -> Result<E, DecodeError> {
    E::decode(body).map_err(|e| DecodeError::Payload {
        message_type: E::TYPE_NAME.to_owned(),
        reason: e.to_string(),
    })
}

/// A header as text, whatever AMQP string type carries it.
pub fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

/// A header as a non-negative integer, whatever AMQP integer type carries it.
pub fn header_u32(headers: &FieldTable, key: &str) -> Option<u32> {
    let value: i128 = match headers.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok()?,
        _ => return None,
    };
    u32::try_from(value).ok()
}

/// Now as the time headers carry it: RFC 3339, UTC, milliseconds.
pub fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An AMQP long string value.
pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.to_owned()))
}

/// Copies `properties` with extra headers set (for retried and dead-lettered copies, which
/// keep every original property: ids, type, trace context).
pub fn with_headers(
    properties: &BasicProperties,
    extra: impl IntoIterator<Item = (&'static str, AMQPValue)>,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (key, value) in extra {
        headers.insert(ShortString::from(key), value);
    }
    properties.clone().with_headers(headers)
}

#[cfg(test)]
mod tests;
