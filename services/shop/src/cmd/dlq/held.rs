//! A dead-letter queue's messages taken in hand without the risk of losing one: a single
//! exclusive consumer receives everything that was in the queue when it looked, and the command
//! looks at them one at a time. What it removes (a replayed or purged message) is acknowledged;
//! what it keeps stays in the queue, in its order, whatever the queue's depth, in one of two
//! ways:
//!
//! - **Held**, up to [`WINDOW`] messages: kept messages stay unacknowledged and go back when the
//!   channel closes (or the process dies), in order.
//! - **Moved to the back**, beyond that: a channel cannot hold more unacknowledged messages
//!   than its prefetch, and the client buffers what the broker pushes, so a deeper queue is read
//!   through a window and every message kept is copied, byte for byte, to the back of the queue
//!   (confirmed before the original is acknowledged, in windows of [`COPIES`]). Once the pass is
//!   over the queue holds the same messages in the same order. Stopped half way, nothing is
//!   lost; at worst the copies of one window are there twice.
//!
//! So a command's memory is bounded by the window, not by the queue (a 100,000-message DLQ is
//! measured in `services/shop/tests/dlq.rs`).

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::dead_letter::DeadLetter;
use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::Decoder;

/// How long to wait for the next message the queue said it holds before taking fewer: another
/// consumer may have taken some meanwhile.
const IDLE: Duration = Duration::from_secs(5);
const CONSUMER_TAG: &str = "shop-dlq";
/// The most messages held unacknowledged at once (the consumer's prefetch): a queue up to this
/// deep is held whole; a deeper one is moved to its back as it is read.
pub const WINDOW: usize = 1_000;
/// Copies to the back of the queue published before their confirms are awaited.
const COPIES: usize = 128;

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

/// One DLQ taken in hand: its messages come one at a time ([`Held::next`]); each is then
/// removed ([`Held::remove`]) or kept ([`Held::keep`]).
#[derive(Debug)]
pub struct Held {
    channel: Channel,
    consumer: Option<lapin::Consumer>,
    /// The queue they are from.
    pub dlq: String,
    /// How many the queue held when it was taken.
    pub depth: usize,
    /// How many have come so far.
    pub taken: usize,
    /// Whether kept messages are moved to the back (the queue is deeper than the window).
    moving: bool,
    /// Copies to the back published, with the original's tag, their confirms not yet awaited.
    copies: Vec<(u64, PublisherConfirm)>,
}

impl Held {
    /// Takes `dlq`, which must exist: every message in it when it was looked at comes through
    /// [`Held::next`]. A command reads them all before it releases them: the broker puts a
    /// returned message behind the ones still in the queue, so only a queue taken whole goes
    /// back in its order.
    pub async fn take(broker: &Broker, dlq: &str) -> anyhow::Result<Self> {
        let depth = broker
            .existing_depth(
                dlq,
                " (shop dlq takes a consuming queue, e.g. `inventory`, whose dead letters are in `inventory.dlq`; `shop dlq list` shows them)",
            )
            .await?;
        let channel = broker.channel().await?;
        let mut held = Self {
            channel,
            consumer: None,
            dlq: dlq.to_owned(),
            depth: depth as usize,
            taken: 0,
            moving: depth as usize > WINDOW,
            copies: Vec::new(),
        };
        if held.depth == 0 {
            return Ok(held);
        }
        // What the client buffers is bounded by the prefetch, and what the command holds counts
        // against it too (a quorum queue gives a prefetch of 0 a credit of 2,000, not
        // "unlimited").
        let prefetch = u16::try_from(held.depth.min(WINDOW)).unwrap_or(u16::MAX);
        held.channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        let consumer = held
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
        held.consumer = Some(consumer);
        Ok(held)
    }

    /// The next message in queue order, read and decoded; `None` once all that the queue held
    /// have come (or none came for a while: another consumer may have taken some meanwhile).
    pub async fn next(&mut self, decoder: &Decoder) -> anyhow::Result<Option<HeldLetter>> {
        let delivery = match self.consumer.as_mut() {
            Some(consumer) if self.taken < self.depth => {
                match tokio::time::timeout(IDLE, consumer.next()).await {
                    Ok(Some(delivery)) => {
                        Some(delivery.with_context(|| format!("reading {}", self.dlq))?)
                    }
                    Ok(None) | Err(_) => None,
                }
            }
            _ => None,
        };
        let Some(delivery) = delivery else {
            // No more pushes (the copies at the back are not read again); what is held stays
            // held until acknowledged or the channel closes.
            if self.consumer.take().is_some() {
                self.channel
                    .basic_cancel(CONSUMER_TAG, BasicCancelOptions { nowait: false })
                    .await?;
            }
            return Ok(None);
        };
        self.taken += 1;
        Ok(Some(HeldLetter {
            tag: delivery.delivery_tag,
            letter: DeadLetter::read(
                decoder,
                &delivery.properties,
                delivery.routing_key.as_str(),
                &delivery.data,
            ),
            properties: delivery.properties,
            body: delivery.data,
        }))
    }

    /// Keeps `held_letter` in the queue, in its place: held, or copied to the back (see the
    /// module's doc).
    pub async fn keep(&mut self, held_letter: HeldLetter) -> anyhow::Result<()> {
        if !self.moving {
            return Ok(()); // held: it goes back when the channel closes
        }
        let confirm = self
            .channel
            .basic_publish(
                "",
                &self.dlq,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &held_letter.body,
                held_letter.properties,
            )
            .await
            .with_context(|| format!("cannot copy a message to the back of {}", self.dlq))?;
        self.copies.push((held_letter.tag, confirm));
        if self.copies.len() >= COPIES {
            self.settle().await?;
        }
        Ok(())
    }

    /// Awaits the confirms of the copies sent to the back and removes each original.
    async fn settle(&mut self) -> anyhow::Result<()> {
        for (tag, confirm) in std::mem::take(&mut self.copies) {
            match confirm
                .await
                .with_context(|| format!("copying to the back of {}", self.dlq))?
            {
                Confirmation::Ack(None) => self.remove(tag).await?,
                _ => anyhow::bail!(
                    "the broker did not confirm a copy to the back of {}; its original stays",
                    self.dlq
                ),
            }
        }
        Ok(())
    }

    /// Reads every message still to come and keeps each.
    pub async fn keep_rest(&mut self, decoder: &Decoder) -> anyhow::Result<()> {
        while let Some(held_letter) = self.next(decoder).await? {
            self.keep(held_letter).await?;
        }
        Ok(())
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

    /// Settles the copies still in flight, then gives every message held back to the queue,
    /// in order. Fails when a copy was not confirmed (its original goes back: nothing lost).
    pub async fn release(mut self) -> anyhow::Result<()> {
        let settled = self.settle().await;
        let _ = self.channel.close(200, "released").await;
        settled
    }
}
