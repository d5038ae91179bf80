//! A probe: a queue bound to the test's exchange (or any queue) that a test reads events from.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use shop_proto::Event;

use crate::messaging::{IncomingMeta, envelope, topology};

use super::broker::TestBroker;

/// A message read off the broker by a probe.
#[derive(Debug, Clone)]
pub struct Received {
    /// The routing key it arrived with.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
}

impl Received {
    /// The contract metadata of the message.
    pub fn meta(&self) -> IncomingMeta {
        IncomingMeta::read(&self.properties, &self.routing_key).expect("a well-formed event")
    }

    /// A header as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| envelope::header_str(h, key))
    }

    /// Decodes the message as `E`, checking its type.
    pub fn decode<E: Event>(&self) -> E {
        envelope::decode::<E>(&self.properties, &self.body).expect("decodes as the expected event")
    }

    /// The same message again, as `app_id` would publish it a second time: its message id,
    /// type, routing key, body, correlation and trace context (a duplicate delivery).
    pub fn redelivery(&self, app_id: &str) -> crate::messaging::Envelope {
        let meta = self.meta();
        crate::messaging::Envelope {
            message_id: uuid::Uuid::parse_str(&meta.message_id)
                .expect("a service's message id is a UUID")
                .into(),
            message_type: meta.message_type,
            routing_key: self.routing_key.clone(),
            payload: self.body.clone(),
            app_id: app_id.into(),
            correlation_id: meta.correlation_id,
            causation_id: None,
            actor_id: None,
            traceparent: meta.traceparent,
            tracestate: meta.tracestate,
            subject: String::new(),
            staged_at: None,
        }
    }
}

/// An exclusive queue bound to the test's exchange (or any queue) that a test reads from.
#[derive(Debug)]
pub struct EventProbe {
    _conn: Connection,
    consumer: lapin::Consumer,
}

impl EventProbe {
    /// A probe of every event published on the test's exchange with one of `keys`
    /// (`#` for all).
    pub async fn bind(broker: &TestBroker, keys: &[&str]) -> Self {
        let conn = broker.connect("probe").await;
        let channel = conn.create_channel().await.expect("probe channel");
        topology::declare_exchange(&channel, &broker.names)
            .await
            .expect("declare the exchange");
        let queue = topology::declare_tap(&channel, &broker.names, keys)
            .await
            .expect("declare and bind the probe's queue");
        Self::consume(conn, channel, &queue).await
    }

    /// A probe reading an existing queue (a DLQ, say).
    pub async fn queue(broker: &TestBroker, queue: &str) -> Self {
        let conn = broker.connect("probe").await;
        let channel = conn.create_channel().await.expect("probe channel");
        Self::consume(conn, channel, queue).await
    }

    async fn consume(conn: Connection, channel: lapin::Channel, queue: &str) -> Self {
        let consumer = channel
            .basic_consume(
                queue,
                "probe",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume the probe queue");
        Self {
            _conn: conn,
            consumer,
        }
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        Some(Received {
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties,
            body: delivery.data,
        })
    }

    /// The next message, or a panic naming `what` after `timeout`.
    pub async fn expect(&mut self, timeout: Duration, what: &str) -> Received {
        self.next(timeout)
            .await
            .unwrap_or_else(|| panic!("no message within {timeout:?}: expected {what}"))
    }

    /// The next message of type `E` (others are skipped), decoded.
    pub async fn expect_event<E: Event>(&mut self, timeout: Duration) -> (E, Received) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self.expect(left, E::TYPE_NAME).await;
            if received.properties.kind().as_ref().map(|k| k.as_str()) == Some(E::TYPE_NAME) {
                return (received.decode::<E>(), received);
            }
        }
    }
}
