//! Messages the AMQP client itself cannot read, taken out of a queue without reading them.
//!
//! A short-string property or header name that is not UTF-8 (AMQP says it must be, RabbitMQ
//! does not check) makes lapin treat the whole frame as a protocol error: it drops the
//! connection, every consumer on it fails, and the broker hands the message back first on the
//! next connection, which fails the same way. Left alone, nothing ends that loop: on RabbitMQ
//! 3.10 deliveries returned by a dropped connection do not count towards the quorum queue's
//! delivery limit (measured: after 400 s the message was still first in its queue and the ten
//! behind it unapplied), and every queue the process consumes stalls with it.
//!
//! So after a session ends with a parse error, the consumer looks at the head of its queue
//! on a connection of its own that does not parse what it does not need to: it gets up to
//! `look_at` messages one by one (held, unacknowledged), checks each one's content header with
//! the client's own parser, and for the one that fails it publishes a readable copy to the
//! service's DLQ (its body as it was, its raw properties in hex, `x-death-reason` saying
//! why), waits for the broker's confirm, and acknowledges the original. Closing the connection
//! gives every other message back, in order. A message thus reaches the DLQ after one failed
//! delivery, and the deliveries around it are returned once more, not fifty times.
//!
//! Only what is needed is spoken: the handshake (PLAIN), one channel, `basic.get`,
//! `confirm.select`, `basic.publish`, `basic.ack`. Frames are generated and, where they
//! can be, parsed by amq-protocol (lapin's own codec); `get-ok` and content headers are read
//! here, since they are what may be unreadable. Plain `amqp://` only: over `amqps://` the
//! consumer cannot look, and says so in an error log line when it happens.

use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use amq_protocol::uri::{AMQPScheme, AMQPUri};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::envelope;

/// The largest frame accepted (and proposed in `tune-ok`).
const FRAME_MAX: u32 = 131_072;
/// How long the whole look may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// The header holding the original's properties, hex-encoded as they arrived.
pub const ORIGINAL_PROPERTIES: &str = "x-original-properties-hex";

/// What a look at a queue's head found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No message among the first `look_at` was unreadable; all went back.
    Nothing {
        /// How many were looked at.
        looked_at: usize,
    },
    /// One unreadable message was copied to the DLQ and removed from the queue.
    DeadLettered {
        /// Its routing key, as far as it could be read.
        routing_key: String,
        /// Why it could not be read.
        error: String,
    },
}

/// Why a look did not finish.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The URL is not a plain `amqp://` URL.
    #[error("cannot look at a queue over {0} (only amqp://)")]
    Unsupported(String),
    /// The broker could not be reached or spoke out of turn.
    #[error("broker: {0}")]
    Io(#[from] std::io::Error),
    /// The broker refused something (a method it sent that was not the one expected).
    #[error("unexpected from the broker: {0}")]
    Protocol(String),
    /// The look took longer than its deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Whether a session's error is lapin failing to parse a frame (anywhere in its chain).
pub fn is_parse_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<lapin::Error>(),
            Some(lapin::Error::ParsingError(_))
        )
    })
}

/// Looks at up to `look_at` messages at the head of `queue` (on the broker at `url`, one node
/// URL) and moves the first one lapin cannot parse to `dlq` (see the module's doc).
pub async fn dead_letter_unreadable(
    url: &str,
    queue: &str,
    dlq: &str,
    look_at: usize,
) -> Result<Found, QuarantineError> {
    tokio::time::timeout(DEADLINE, look(url, queue, dlq, look_at))
        .await
        .map_err(|_| QuarantineError::Timeout(DEADLINE))?
}

async fn look(url: &str, queue: &str, dlq: &str, look_at: usize) -> Result<Found, QuarantineError> {
    let uri: AMQPUri = url
        .parse()
        .map_err(|_| QuarantineError::Unsupported("a URL that does not parse".into()))?;
    if uri.scheme != AMQPScheme::AMQP {
        return Err(QuarantineError::Unsupported("amqps://".into()));
    }
    let mut wire = Wire::open(&uri).await?;
    let mut found = Found::Nothing { looked_at: 0 };
    for looked in 0..look_at {
        wire.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: queue.into(),
                no_ack: false, // held: returned when the connection closes
            })),
        )
        .await?;
        let frame = wire.read().await?;
        match method_ids(&frame) {
            Some((60, 72)) => {
                found = Found::Nothing { looked_at: looked };
                break; // get-empty: the queue has nothing more
            }
            Some((60, 71)) => {}
            other => return Err(unexpected("basic.get-ok", other)),
        }
        let get_ok = GetOk::read(&frame.payload)?;
        let header = wire.read().await?;
        if header.kind != 2 {
            return Err(QuarantineError::Protocol(
                "a content header after get-ok".into(),
            ));
        }
        let body = wire.read_body(&header).await?;
        let unreadable = match (&get_ok.readable, parse_frame(header.bytes.as_slice())) {
            (Err(error), _) => Some(error.clone()),
            (Ok(()), Err(error)) => Some(format!("its properties: {error}")),
            (Ok(()), Ok(_)) => None,
        };
        if let Some(error) = unreadable {
            wire.copy_to_dlq(dlq, &get_ok, &header.payload, body, &error)
                .await?;
            wire.send_method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: get_ok.delivery_tag,
                    multiple: false,
                })),
            )
            .await?;
            found = Found::DeadLettered {
                routing_key: get_ok.routing_key.clone(),
                error,
            };
            break;
        }
        found = Found::Nothing {
            looked_at: looked + 1,
        };
    }
    wire.close().await;
    Ok(found)
}

fn unexpected(what: &str, got: Option<(u16, u16)>) -> QuarantineError {
    QuarantineError::Protocol(format!("expected {what}, got method {got:?}"))
}

/// A content header's properties: built by amq-protocol, or bytes as given (flags first).
enum Properties<'a> {
    Typed(Box<basic::AMQPProperties>),
    #[cfg_attr(
        not(feature = "test-util"),
        allow(
            dead_code,
            reason = "only the tests' raw publisher sends properties as bytes"
        )
    )]
    Raw(&'a [u8]),
}

/// Publishes, confirmed, a message whose `message_id` is `message_id` byte for byte, UTF-8 or
/// not: what a misbehaving producer in another language can send and lapin cannot read.
#[cfg(feature = "test-util")]
pub async fn publish_with_raw_message_id(
    url: &str,
    exchange: &str,
    routing_key: &str,
    message_id: &[u8],
    body: &[u8],
) -> Result<(), QuarantineError> {
    let uri: AMQPUri = url
        .parse()
        .map_err(|_| QuarantineError::Unsupported("a URL that does not parse".into()))?;
    let mut wire = Wire::open(&uri).await?;
    let len = u8::try_from(message_id.len())
        .map_err(|_| QuarantineError::Protocol("a message_id over 255 bytes".into()))?;
    // Property flags: message-id is bit 7 (content-type is bit 15).
    let mut raw = 0x0080u16.to_be_bytes().to_vec();
    raw.push(len);
    raw.extend_from_slice(message_id);
    let published = wire
        .publish(exchange, routing_key, Properties::Raw(&raw), body)
        .await;
    wire.close().await;
    published
}

/// A frame as read off the socket.
struct RawFrame {
    kind: u8,
    payload: Vec<u8>,
    /// The whole frame (header, payload, end octet), for amq-protocol's parser.
    bytes: Vec<u8>,
}

fn method_ids(frame: &RawFrame) -> Option<(u16, u16)> {
    (frame.kind == 1 && frame.payload.len() >= 4).then(|| {
        (
            u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            u16::from_be_bytes([frame.payload[2], frame.payload[3]]),
        )
    })
}

/// `basic.get-ok`, read by hand: its exchange and routing key are short strings a publisher
/// chose, so they may be what lapin cannot read.
struct GetOk {
    delivery_tag: u64,
    routing_key: String,
    /// Whether lapin could read it.
    readable: Result<(), String>,
}

impl GetOk {
    fn read(payload: &[u8]) -> Result<Self, QuarantineError> {
        let short = || QuarantineError::Protocol("a truncated get-ok".into());
        let tag = payload.get(4..12).ok_or_else(short)?;
        let delivery_tag = u64::from_be_bytes(tag.try_into().map_err(|_| short())?);
        let mut at = 13; // after the redelivered octet
        let mut strings = Vec::new();
        for _ in 0..2 {
            let len = usize::from(*payload.get(at).ok_or_else(short)?);
            let bytes = payload.get(at + 1..at + 1 + len).ok_or_else(short)?;
            strings.push(bytes.to_vec());
            at += 1 + len;
        }
        let readable = match strings.iter().position(|s| std::str::from_utf8(s).is_err()) {
            None => Ok(()),
            Some(0) => Err("its exchange name is not UTF-8".to_owned()),
            Some(_) => Err("its routing key is not UTF-8".to_owned()),
        };
        Ok(Self {
            delivery_tag,
            routing_key: String::from_utf8_lossy(&strings[1]).into_owned(),
            readable,
        })
    }
}

/// One plain connection, one channel.
struct Wire {
    stream: TcpStream,
}

impl Wire {
    async fn open(uri: &AMQPUri) -> Result<Self, QuarantineError> {
        let authority = &uri.authority;
        let mut stream = TcpStream::connect((authority.host.as_str(), authority.port)).await?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        let mut wire = Self { stream };
        wire.expect(10, 10, "connection.start").await?;
        let user = &authority.userinfo;
        let response = format!("\0{}\0{}", user.username, user.password);
        let mut client_properties = FieldTable::default();
        client_properties.insert(
            "connection_name".into(),
            AMQPValue::LongString("quarantine".into()),
        );
        wire.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = wire.expect(10, 30, "connection.tune").await?;
        let channel_max = tune
            .payload
            .get(4..6)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        wire.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max: FRAME_MAX,
                heartbeat: 0, // a short look: no heartbeats
            })),
        )
        .await?;
        wire.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        )
        .await?;
        wire.expect(10, 41, "connection.open-ok").await?;
        wire.send_method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        wire.expect(20, 11, "channel.open-ok").await?;
        wire.send_method(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        wire.expect(85, 11, "confirm.select-ok").await?;
        Ok(wire)
    }

    async fn send(&mut self, frame: &AMQPFrame) -> Result<(), QuarantineError> {
        let (bytes, _) = gen_frame(frame)(WriteContext::from(Vec::new()))
            .map_err(|e| QuarantineError::Protocol(format!("cannot encode a frame: {e}")))?
            .into_inner();
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    async fn send_method(&mut self, channel: u16, class: AMQPClass) -> Result<(), QuarantineError> {
        self.send(&AMQPFrame::Method(channel, class)).await
    }

    async fn read(&mut self) -> Result<RawFrame, QuarantineError> {
        loop {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).await?;
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
            if size > FRAME_MAX {
                return Err(QuarantineError::Protocol(format!(
                    "a frame of {size} bytes"
                )));
            }
            let mut rest = vec![0u8; size as usize + 1];
            self.stream.read_exact(&mut rest).await?;
            if rest.last() != Some(&0xCE) {
                return Err(QuarantineError::Protocol("a frame without its end".into()));
            }
            let mut bytes = head.to_vec();
            bytes.extend_from_slice(&rest);
            rest.pop();
            let frame = RawFrame {
                kind: head[0],
                payload: rest,
                bytes,
            };
            if frame.kind == 8 {
                continue; // a heartbeat
            }
            if let Some((10, 50) | (20, 40)) = method_ids(&frame) {
                let reason = match parse_frame(frame.bytes.as_slice()) {
                    Ok((_, AMQPFrame::Method(_, class))) => format!("{class:?}"),
                    _ => "a close".into(),
                };
                return Err(QuarantineError::Protocol(format!(
                    "the broker closed: {reason}"
                )));
            }
            return Ok(frame);
        }
    }

    async fn expect(
        &mut self,
        class: u16,
        method: u16,
        what: &str,
    ) -> Result<RawFrame, QuarantineError> {
        let frame = self.read().await?;
        match method_ids(&frame) {
            Some(ids) if ids == (class, method) => Ok(frame),
            other => Err(unexpected(what, other)),
        }
    }

    /// The body frames of the content `header` announced.
    async fn read_body(&mut self, header: &RawFrame) -> Result<Vec<u8>, QuarantineError> {
        let size = header
            .payload
            .get(4..12)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        let mut body = Vec::new();
        while (body.len() as u64) < size {
            let frame = self.read().await?;
            if frame.kind != 3 {
                return Err(QuarantineError::Protocol("a body frame".into()));
            }
            body.extend_from_slice(&frame.payload);
        }
        Ok(body)
    }

    /// Publishes a readable copy of the message to `dlq` and waits for the broker's confirm.
    async fn copy_to_dlq(
        &mut self,
        dlq: &str,
        get_ok: &GetOk,
        header_payload: &[u8],
        body: Vec<u8>,
        error: &str,
    ) -> Result<(), QuarantineError> {
        let properties_hex: String = header_payload
            .get(12..)
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reason = format!(
            "the AMQP client cannot read this message ({error}); dead-lettered unread, its original properties are in {ORIGINAL_PROPERTIES}"
        );
        let mut headers = FieldTable::default();
        for (key, value) in [
            (envelope::DEATH_REASON, reason),
            (envelope::DEATH_TIME, envelope::rfc3339_now()),
            (
                envelope::ORIGINAL_ROUTING_KEY,
                get_ok.routing_key.chars().take(255).collect(),
            ),
            (ORIGINAL_PROPERTIES, properties_hex),
        ] {
            headers.insert(ShortString::from(key), AMQPValue::LongString(value.into()));
        }
        let properties = basic::AMQPProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        // The default exchange: straight to the DLQ.
        self.publish("", dlq, Properties::Typed(Box::new(properties)), &body)
            .await
    }

    /// Publishes one message, mandatory, and waits for the broker's confirm.
    async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: Properties<'_>,
        body: &[u8],
    ) -> Result<(), QuarantineError> {
        self.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: true,
                immediate: false,
            })),
        )
        .await?;
        match properties {
            Properties::Typed(properties) => {
                self.send(&AMQPFrame::Header(
                    1,
                    60,
                    Box::new(AMQPContentHeader {
                        class_id: 60,
                        body_size: body.len() as u64,
                        properties: *properties,
                    }),
                ))
                .await?;
            }
            Properties::Raw(raw) => {
                let mut payload = Vec::with_capacity(12 + raw.len());
                payload.extend_from_slice(&60u16.to_be_bytes()); // class: basic
                payload.extend_from_slice(&0u16.to_be_bytes()); // weight
                payload.extend_from_slice(&(body.len() as u64).to_be_bytes());
                payload.extend_from_slice(raw);
                let mut frame = vec![2u8]; // a content header
                frame.extend_from_slice(&1u16.to_be_bytes());
                frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                frame.extend_from_slice(&payload);
                frame.push(0xCE);
                self.stream.write_all(&frame).await?;
            }
        }
        for chunk in body.chunks(FRAME_MAX as usize - 8) {
            self.send(&AMQPFrame::Body(1, chunk.to_vec())).await?;
        }
        let frame = self.read().await?;
        match method_ids(&frame) {
            Some((60, 80)) => Ok(()), // basic.ack: the message is safe
            Some((60, 50)) => Err(QuarantineError::Protocol(format!(
                "the broker returned the message: nothing is bound to {routing_key:?} on {exchange:?}"
            ))),
            Some((60, 120)) => Err(QuarantineError::Protocol(
                "the broker refused the message (nack)".into(),
            )),
            other => Err(unexpected("basic.ack", other)),
        }
    }

    /// Closes the connection; the broker returns every message still held, in order.
    async fn close(mut self) {
        let _ = self
            .send_method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                    reply_code: 200,
                    reply_text: "looked".into(),
                    class_id: 0,
                    method_id: 0,
                })),
            )
            .await;
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.stream.read(&mut [0u8; 64])).await;
    }
}
