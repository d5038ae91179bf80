//! A dead-letter queue's messages taken in hand without the risk of losing one: a single
//! exclusive consumer receives everything that was in the queue when it looked and holds every
//! message unacknowledged. What is acknowledged leaves the queue; everything else goes back
//! when the channel closes, in the order it was delivered, and so does everything if the
//! process dies half way. A message that arrives meanwhile ends up ahead of those returned.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::dead_letter::DeadLetter;
use crate::broker::Broker;
use crate::decoded::Decoder;

/// How long to wait for the next message the queue said it holds before taking fewer: another
/// consumer may have taken some meanwhile.
const IDLE: Duration = Duration::from_secs(5);
const CONSUMER_TAG: &str = "shop-dlq";

/// One message in hand.
#[derive(Debug)]
pub struct HeldLetter {
    /// Its delivery tag on the holding channel.
    pub tag: u64,
    /// As shown.
    pub letter: DeadLetter,
    /// Its properties, as received.
    pub properties: BasicProperties,
    /// Its body, as received.
    pub body: Vec<u8>,
}

/// The messages of one DLQ, held.
#[derive(Debug)]
pub struct Held {
    channel: Channel,
    /// The queue they are from.
    pub dlq: String,
    /// In queue order.
    pub letters: Vec<HeldLetter>,
}

impl Held {
    /// Takes every message of `dlq`, which must exist. Always all of them: the broker puts a
    /// returned message behind the ones still in the queue, so only a queue taken whole goes
    /// back in its order.
    pub async fn take(broker: &Broker, dlq: &str, decoder: &Decoder) -> anyhow::Result<Self> {
        let depth = broker
            .existing_depth(
                dlq,
                " (shop dlq takes a consuming queue, e.g. `inventory`, whose dead letters are in `inventory.dlq`; `shop dlq list` shows them)",
            )
            .await?;
        let want = depth as usize;
        let channel = broker.channel().await?;
        let mut held = Self {
            channel,
            dlq: dlq.to_owned(),
            letters: Vec::with_capacity(want),
        };
        if want == 0 {
            return Ok(held);
        }
        // As many in flight as there are; above u16::MAX, no limit.
        let prefetch = u16::try_from(want).unwrap_or(0);
        held.channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        let mut consumer = held
            .channel
            .basic_consume(
                dlq,
                CONSUMER_TAG,
                BasicConsumeOptions {
                    no_local: false,
                    no_ack: false,   // held until acknowledged, returned otherwise
                    exclusive: true, // nobody else takes a message while we hold the queue
                    nowait: false,
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| match &e {
                lapin::Error::ProtocolError(amqp) if amqp.get_id() == 403 => anyhow::anyhow!(
                    "{dlq} is being read by another consumer (another `shop dlq` command?); try again when it is done"
                ),
                _ => anyhow::Error::new(e).context(format!("cannot consume from {dlq}")),
            })?;
        while held.letters.len() < want {
            let delivery = match tokio::time::timeout(IDLE, consumer.next()).await {
                Ok(Some(delivery)) => delivery.with_context(|| format!("reading {dlq}"))?,
                Ok(None) | Err(_) => break,
            };
            held.letters.push(HeldLetter {
                tag: delivery.delivery_tag,
                letter: DeadLetter::read(
                    decoder,
                    &delivery.properties,
                    delivery.routing_key.as_str(),
                    &delivery.data,
                ),
                properties: delivery.properties,
                body: delivery.data,
            });
        }
        // No more pushes; what is held stays held until acknowledged or the channel closes.
        held.channel
            .basic_cancel(CONSUMER_TAG, BasicCancelOptions { nowait: false })
            .await?;
        Ok(held)
    }

    /// The channel the messages are held on (copies are published on it too).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Removes one held message from the queue for good.
    pub async fn remove(&self, tag: u64) -> anyhow::Result<()> {
        self.channel
            .basic_ack(tag, BasicAckOptions { multiple: false })
            .await
            .with_context(|| format!("cannot remove a message from {}", self.dlq))
    }

    /// Gives every message not removed back to the queue, in order.
    pub async fn release(self) {
        let _ = self.channel.close(200, "released").await;
    }
}
