//! Sending dead letters back to the one queue they died in, never losing one.
//!
//! Each copy goes through the default exchange straight to the consuming queue (not through
//! `shop.events`, where every subscriber of its routing key would get it again), with the same
//! body and `message_id`, so the consumer's inbox still recognises a message it already
//! applied. The death headers go (the copy gets a fresh retry budget), `x-replayed-count` and
//! `x-replayed-at` come. A message leaves the DLQ only once the broker confirmed its copy:
//! stopped at any point, a replay loses nothing and at worst sends one copy twice, which the
//! inbox absorbs.

use std::ops::ControlFlow;

use anyhow::Context as _;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use shop_shared::messaging::envelope;

use super::dead_letter::DeadLetter;
use super::held::{Held, HeldLetter};

/// Copies published before their confirms are awaited: enough to keep the broker busy.
const WINDOW: usize = 128;

/// Headers that describe a death, left off the copy: the broker's, and shop's own.
const DEATH_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
    envelope::DEATH_REASON,
    envelope::DEATH_TIME,
    envelope::RETRY_COUNT,
];

/// What happened to one chosen message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its copy is in the queue and it left the DLQ.
    Replayed,
    /// `--dry-run`: it would have been replayed.
    WouldReplay,
    /// Replayed `--max-replays` times already: it stays in the DLQ.
    OverLimit,
}

impl Outcome {
    /// The word `--json` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::WouldReplay => "would_replay",
            Self::OverLimit => "skipped_over_limit",
        }
    }
}

/// Told about every step; the command's progress bar and lines, or a test.
pub trait Observer {
    /// `total` messages were chosen.
    fn started(&mut self, _total: usize) {}
    /// The broker confirmed the copy of `letter`, which is still in the DLQ: returning
    /// `Break` stops here, as a killed process would.
    fn confirmed(&mut self, _letter: &DeadLetter) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// `letter` is done with.
    fn finished(&mut self, letter: &DeadLetter, outcome: &Outcome);
}

/// The counts a replay ends with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Copies confirmed and removed from the DLQ (or that would be, with `--dry-run`).
    pub replayed: usize,
    /// Chosen but over the replay limit; still in the DLQ.
    pub skipped: usize,
    /// Stopped by the observer before all were done.
    pub interrupted: bool,
}

/// Replays `chosen` (indices into `held.letters`) to `queue`.
pub async fn replay(
    held: &Held,
    chosen: &[usize],
    queue: &str,
    max_replays: u32,
    dry_run: bool,
    observer: &mut dyn Observer,
) -> anyhow::Result<Summary> {
    observer.started(chosen.len());
    let mut summary = Summary::default();
    let mut due = Vec::new();
    for &index in chosen {
        let held_letter = &held.letters[index];
        let letter = &held_letter.letter;
        if letter.replayed_count >= max_replays {
            summary.skipped += 1;
            observer.finished(letter, &Outcome::OverLimit);
        } else if dry_run {
            summary.replayed += 1;
            observer.finished(letter, &Outcome::WouldReplay);
        } else {
            due.push(held_letter);
        }
    }
    let replayed_at = envelope::rfc3339_now();
    for window in due.chunks(WINDOW) {
        let mut confirms = Vec::with_capacity(window.len());
        for held_letter in window {
            let confirm = held
                .channel()
                .basic_publish(
                    "",
                    queue,
                    BasicPublishOptions {
                        mandatory: true, // a copy the broker cannot route comes back, not lost
                        immediate: false,
                    },
                    &held_letter.body,
                    copy_properties(held_letter, &replayed_at),
                )
                .await
                .with_context(|| format!("cannot publish to {queue}"))?;
            confirms.push((held_letter, confirm));
        }
        for (held_letter, confirm) in confirms {
            let letter = &held_letter.letter;
            match confirm
                .await
                .with_context(|| format!("publishing to {queue}"))?
            {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => anyhow::bail!(
                    "the broker could not route the copy of {} to {queue}; it stays in {}",
                    letter.id(),
                    held.dlq
                ),
                Confirmation::Nack(_) | Confirmation::NotRequested => anyhow::bail!(
                    "the broker did not confirm the copy of {} in {queue}; it stays in {}",
                    letter.id(),
                    held.dlq
                ),
            }
            if observer.confirmed(letter).is_break() {
                summary.interrupted = true;
                return Ok(summary);
            }
            held.remove(held_letter.tag).await?;
            summary.replayed += 1;
            observer.finished(letter, &Outcome::Replayed);
        }
    }
    Ok(summary)
}

/// The copy's properties: every property and header of the original except the death
/// headers, the original routing key kept, the replay counted.
fn copy_properties(held_letter: &HeldLetter, replayed_at: &str) -> BasicProperties {
    let original = held_letter.properties.headers().clone().unwrap_or_default();
    let mut headers = FieldTable::default();
    for (key, value) in original.inner() {
        if !DEATH_HEADERS.contains(&key.as_str()) {
            headers.insert(key.clone(), value.clone());
        }
    }
    let letter = &held_letter.letter;
    headers.insert(
        ShortString::from(envelope::ORIGINAL_ROUTING_KEY),
        envelope::long_string(&letter.view.routing_key),
    );
    headers.insert(
        ShortString::from(envelope::REPLAYED_COUNT),
        AMQPValue::LongInt(i32::try_from(letter.replayed_count + 1).unwrap_or(i32::MAX)),
    );
    headers.insert(
        ShortString::from(envelope::REPLAYED_AT),
        envelope::long_string(replayed_at),
    );
    held_letter
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
}
