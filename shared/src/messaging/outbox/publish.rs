//! One round's messages on the wire: each sent with its producer span (a child of the span that
//! staged the row), all sent before any confirm is awaited, each confirm awaited at most
//! `OUTBOX_CONFIRM_TIMEOUT_MS`, and what the broker's answer means for the row ([`Sent`]).

use std::time::{Duration, Instant};

use futures::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, publisher_confirm::Confirmation};

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::messaging::envelope::Envelope;
use crate::telemetry::propagation::{TraceFields, continue_trace};

use super::relay::{ClaimedRow, Relay};

impl Relay {
    /// Counts a committed round: the events confirmed and marked, per routing key, the failed
    /// publishes, and the round's duration.
    pub(super) fn count_round(
        &self,
        started: Instant,
        published_keys: &[&str],
        returned: &[(String, String)],
        failed: usize,
    ) {
        self.count_sent(published_keys, returned, failed);
        self.metrics.relay_round(started.elapsed());
    }

    /// Counts events confirmed, per routing key, the failed publishes, and the events no queue
    /// was bound for (each routing key logged once).
    pub(super) fn count_sent(
        &self,
        published_keys: &[&str],
        returned: &[(String, String)],
        failed: usize,
    ) {
        let exchange = self.names.exchange();
        let mut counts: Vec<(&str, u64)> = Vec::new();
        for key in published_keys {
            match counts.iter_mut().find(|(k, _)| k == key) {
                Some((_, n)) => *n += 1,
                None => counts.push((key, 1)),
            }
        }
        for (key, n) in counts {
            self.metrics.messages_sent(&exchange, key, n);
        }
        if failed > 0 {
            self.metrics.publish_failed(failed as u64);
        }
        for (key, message_id) in returned {
            self.metrics.unroutable(key);
            let first = self
                .unroutable_logged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone());
            if first {
                tracing::warn!(
                    routing_key = %key,
                    message_id = %message_id,
                    "a published event reached no queue (no queue is bound to its routing key); \
                     counted in shop_unroutable_messages_total, logged once per key"
                );
            }
        }
    }

    /// Sends every row, then awaits every confirm: one round trip for the whole batch.
    pub(super) async fn publish_pipelined(
        &self,
        channel: &Channel,
        rows: &[&ClaimedRow],
    ) -> Vec<Sent> {
        let envelopes: Vec<Envelope> = rows.iter().map(|row| self.envelope(row)).collect();
        let in_flight = self.send(channel, envelopes).await;
        self.confirmed(in_flight).await
    }

    /// Sends every envelope (as this relay's `app_id`), without waiting for a confirm.
    ///
    /// Each message gets a producer span whose parent is the span that staged the row (its
    /// stored trace context), so the publish continues the request's trace, not the relay
    /// loop's; the message carries the producer span's context in its headers.
    pub(super) async fn send(&self, channel: &Channel, envelopes: Vec<Envelope>) -> Vec<InFlight> {
        let exchange = self.names.exchange();
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let mut prepared = Vec::with_capacity(envelopes.len());
        for mut envelope in envelopes {
            envelope.app_id.clone_from(&self.app_id);
            let span = tracing::info_span!(
                "amqp.publish",
                otel.name = %format!("{} publish", envelope.routing_key),
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "rabbitmq",
                messaging.operation.type = "publish",
                messaging.destination.name = %exchange,
                messaging.rabbitmq.destination.routing_key = %envelope.routing_key,
                messaging.message.id = %envelope.message_id,
                messaging.message.conversation_id = %envelope.correlation_id,
                shop.service = %self.app_id,
                trace_id = tracing::field::Empty,
            );
            let stored = TraceFields {
                traceparent: envelope.traceparent.take(),
                tracestate: envelope.tracestate.take(),
            };
            continue_trace(&span, stored.to_context());
            let produced = TraceFields::from_context(&span.context());
            // Without an OpenTelemetry layer (telemetry not initialised) the span has no
            // context of its own: pass the stored one on, so the trace never breaks here.
            let carried = if produced.traceparent.is_some() {
                produced
            } else {
                stored
            };
            envelope.traceparent = carried.traceparent;
            envelope.tracestate = carried.tracestate;
            prepared.push((envelope, span));
        }
        // Every publish handed to the connection at once (in order: each takes its delivery
        // tag when first polled), then their sends awaited together: a batch costs one trip
        // through the connection's I/O thread, not one per message.
        let sends = prepared.iter().map(|(envelope, _)| async {
            check_publishable(envelope).map_err(Sent::RowFault)?;
            channel
                .basic_publish(
                    &exchange,
                    &envelope.routing_key,
                    BasicPublishOptions {
                        // Returned, not dropped, when no queue is bound to its key: counted.
                        mandatory: true,
                        immediate: false, // not supported by RabbitMQ
                    },
                    &envelope.payload,
                    envelope.properties(now),
                )
                .await
                .map_err(|e| Sent::failed(&e))
        });
        let sent = join_all(sends).await;
        prepared
            .into_iter()
            .zip(sent)
            .map(|((_, span), sent)| InFlight { sent, span })
            .collect()
    }

    /// Awaits the confirm of every message sent, each at most `OUTBOX_CONFIRM_TIMEOUT_MS`:
    /// what the broker made of each, in order.
    pub(super) async fn confirmed(&self, in_flight: Vec<InFlight>) -> Vec<Sent> {
        let timeout = self.config.confirm_timeout;
        let confirms = in_flight
            .into_iter()
            .map(|InFlight { sent, span }| async move {
                let outcome = match sent {
                    Err(failed) => failed,
                    Ok(confirm) => match tokio::time::timeout(timeout, confirm).await {
                        Ok(Ok(Confirmation::Ack(returned))) => Sent::Confirmed {
                            returned: returned.is_some(),
                        },
                        Ok(Ok(Confirmation::NotRequested)) => Sent::Confirmed { returned: false },
                        Ok(Ok(Confirmation::Nack(_))) => {
                            Sent::BrokerFault("the broker nacked the message".to_owned())
                        }
                        Ok(Err(e)) => Sent::failed(&e),
                        Err(_) => Sent::TimedOut(timeout),
                    },
                };
                if !matches!(outcome, Sent::Confirmed { .. }) {
                    span.record("otel.status_code", "ERROR");
                }
                // The producer span ends here, once the broker has answered.
                drop(span);
                outcome
            });
        join_all(confirms).await
    }

    pub(super) fn envelope(&self, row: &ClaimedRow) -> Envelope {
        Envelope {
            message_id: row.message_id,
            message_type: row.message_type.clone(),
            routing_key: row.routing_key.clone(),
            payload: row.payload.clone(),
            app_id: self.app_id.clone(),
            correlation_id: row.correlation_id.clone(),
            causation_id: row.causation_id.clone(),
            actor_id: row.actor_id.clone(),
            traceparent: row.traceparent.clone(),
            tracestate: row.tracestate.clone(),
            subject: row.subject.clone().unwrap_or_default(),
            staged_at: Some(row.created_at),
        }
    }
}

/// AMQP short strings (routing key, type and the other properties) hold at most 255 bytes;
/// a longer one cannot be sent, so the row fails here instead of breaking the connection.
fn check_publishable(envelope: &Envelope) -> Result<(), String> {
    for (what, value) in [
        ("routing key", &envelope.routing_key),
        ("type", &envelope.message_type),
        ("correlation id", &envelope.correlation_id),
    ] {
        if value.len() > 255 {
            return Err(format!("{what} is {} bytes, AMQP allows 255", value.len()));
        }
    }
    Ok(())
}

/// One message sent, its confirm not awaited yet; its producer span ends with the confirm.
pub(super) struct InFlight {
    sent: Result<lapin::publisher_confirm::PublisherConfirm, Sent>,
    span: tracing::Span,
}

/// How the broker took one message of a round.
#[derive(Debug)]
pub(super) enum Sent {
    /// Confirmed: the row is published. `returned`: no queue was bound to its key (mandatory),
    /// which is counted and logged but is not the row's failure.
    Confirmed { returned: bool },
    /// The row itself cannot be sent, or broke the channel (a channel-level error): counts
    /// against its attempts, and it is parked after `max_attempts`.
    RowFault(String),
    /// The broker is down or did not take the message (a nack, a lost connection): the row is
    /// published again later, its attempts unchanged.
    BrokerFault(String),
    /// No confirm within the timeout: as a broker fault, and the channel is given up.
    TimedOut(Duration),
}

impl Sent {
    /// Whose fault a client error is: a channel-level (soft) error closed the channel because
    /// of what was sent; anything else (the connection lost, closed by the broker) is the
    /// broker's.
    fn failed(error: &lapin::Error) -> Self {
        match error {
            lapin::Error::ProtocolError(e)
                if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
            {
                Sent::RowFault(error.to_string())
            }
            _ => Sent::BrokerFault(error.to_string()),
        }
    }
}
