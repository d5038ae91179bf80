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
//! consumer cannot look, and says so in an error log line when it happens.//!
//! The connection that speaks those few methods is in `wire`.

mod wire;

use std::time::Duration;

use amq_protocol::frame::parse_frame;
use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::uri::{AMQPScheme, AMQPUri};

use wire::{GetOk, Wire, method_ids};

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
