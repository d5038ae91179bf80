//! A plain AMQP 0-9-1 connection that speaks only what the quarantine needs: the handshake
//! (PLAIN), one channel, `basic.get`, `confirm.select`, `basic.publish`, `basic.ack`; frames
//! generated (and where they can be, parsed) by amq-protocol, `get-ok` and content headers read
//! here.

use std::time::Duration;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use amq_protocol::uri::AMQPUri;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::messaging::envelope;

use super::{FRAME_MAX, ORIGINAL_PROPERTIES, Properties, QuarantineError, unexpected};

/// A frame as read off the socket.
pub(super) struct RawFrame {
    pub(super) kind: u8,
    pub(super) payload: Vec<u8>,
    /// The whole frame (header, payload, end octet), for amq-protocol's parser.
    pub(super) bytes: Vec<u8>,
}

pub(super) fn method_ids(frame: &RawFrame) -> Option<(u16, u16)> {
    (frame.kind == 1 && frame.payload.len() >= 4).then(|| {
        (
            u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
            u16::from_be_bytes([frame.payload[2], frame.payload[3]]),
        )
    })
}

/// `basic.get-ok`, read by hand: its exchange and routing key are short strings a publisher
/// chose, so they may be what lapin cannot read.
pub(super) struct GetOk {
    pub(super) delivery_tag: u64,
    pub(super) routing_key: String,
    /// Whether lapin could read it.
    pub(super) readable: Result<(), String>,
}

impl GetOk {
    pub(super) fn read(payload: &[u8]) -> Result<Self, QuarantineError> {
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
pub(super) struct Wire {
    stream: TcpStream,
}

impl Wire {
    pub(super) async fn open(uri: &AMQPUri) -> Result<Self, QuarantineError> {
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

    pub(super) async fn send(&mut self, frame: &AMQPFrame) -> Result<(), QuarantineError> {
        let (bytes, _) = gen_frame(frame)(WriteContext::from(Vec::new()))
            .map_err(|e| QuarantineError::Protocol(format!("cannot encode a frame: {e}")))?
            .into_inner();
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    pub(super) async fn send_method(
        &mut self,
        channel: u16,
        class: AMQPClass,
    ) -> Result<(), QuarantineError> {
        self.send(&AMQPFrame::Method(channel, class)).await
    }

    pub(super) async fn read(&mut self) -> Result<RawFrame, QuarantineError> {
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

    pub(super) async fn expect(
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
    pub(super) async fn read_body(
        &mut self,
        header: &RawFrame,
    ) -> Result<Vec<u8>, QuarantineError> {
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
    pub(super) async fn copy_to_dlq(
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
    pub(super) async fn publish(
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
    pub(super) async fn close(mut self) {
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
