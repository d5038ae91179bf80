//! Messages that are not applied: a transient failure is copied to the retry queue of its
//! attempt (its TTL brings it back), a permanent one or the last attempt to `<queue>.dlq` with
//! the headers that say why; each copy is confirmed by the broker before the original is
//! acknowledged, so nothing is dropped.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};

use crate::messaging::envelope::{self};

use super::HandlerError;
use super::apply::Prepared;
use super::session::Inner;

/// Where a message goes when it is not applied.
pub(super) enum Divert {
    Retry(Duration),
    DeadLetter(String),
}

/// A message that is not applied: what to send where, and the original routing key.
pub(super) struct Diverted {
    pub(super) properties: BasicProperties,
    pub(super) body: Vec<u8>,
    pub(super) routing_key: String,
    pub(super) retry_count: u32,
    pub(super) divert: Divert,
}

impl Inner {
    pub(super) fn divert(&self, prepared: &Prepared, error: HandlerError) -> Diverted {
        let attempt = prepared.meta.retry_count + 1;
        let divert = match &error {
            HandlerError::Permanent(_) => Divert::DeadLetter(error.to_string()),
            HandlerError::Transient(_) => match self.config.retry.delay_after(attempt) {
                Some(delay) => Divert::Retry(delay),
                None => Divert::DeadLetter(format!("{error} (after {attempt} attempts)")),
            },
        };
        tracing::warn!(message_id = %prepared.meta.message_id, attempt, error = %error, "handler failed");
        Diverted {
            properties: prepared.properties.clone(),
            body: prepared.body.clone(),
            routing_key: prepared.meta.routing_key.clone(),
            retry_count: prepared.meta.retry_count,
            divert,
        }
    }

    /// Sends a diverted message's copy to its retry queue or the DLQ and waits for the
    /// broker's confirm; returns the queue.
    pub(super) async fn publish_diverted(
        &self,
        channel: &Channel,
        diverted: Diverted,
    ) -> anyhow::Result<String> {
        let Diverted {
            properties,
            body,
            routing_key,
            retry_count,
            divert,
        } = diverted;
        let routing_key = routing_key.as_str();
        let (queue, properties) = match divert {
            Divert::Retry(delay) => (
                self.names.retry_queue(&self.service, delay),
                envelope::with_headers(
                    &properties,
                    [
                        (
                            envelope::RETRY_COUNT,
                            AMQPValue::LongInt(retry_count as i32 + 1),
                        ),
                        (
                            envelope::ORIGINAL_ROUTING_KEY,
                            envelope::long_string(routing_key),
                        ),
                    ],
                ),
            ),
            Divert::DeadLetter(reason) => (
                self.names.dlq(&self.service),
                envelope::with_headers(
                    &properties,
                    [
                        (envelope::DEATH_REASON, envelope::long_string(&reason)),
                        (
                            envelope::DEATH_TIME,
                            envelope::long_string(&envelope::rfc3339_now()),
                        ),
                        (
                            envelope::RETRY_COUNT,
                            AMQPValue::LongInt(retry_count as i32),
                        ),
                        (
                            envelope::ORIGINAL_ROUTING_KEY,
                            envelope::long_string(routing_key),
                        ),
                    ],
                ),
            ),
        };
        // Through the default exchange straight to the queue: a retry concerns this service
        // only, not every subscriber of the routing key.
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions {
                    mandatory: false,
                    immediate: false,
                },
                &body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(queue),
            Confirmation::Nack(_) => anyhow::bail!("the broker nacked the copy for {queue}"),
        }
    }
}
