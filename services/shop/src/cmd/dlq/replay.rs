//! Sending dead letters back to the one queue they died in, never losing one.
//!
//! Each copy goes through the default exchange straight to the consuming queue (not through
//! `shop.events`, where every subscriber of its routing key would get it again), with the same
//! body and `message_id`, so the consumer's inbox still recognises a message it already
//! applied. The death headers go (the copy gets a fresh retry budget), `x-replayed-count` and
//! `x-replayed-at` come. A message leaves the DLQ only once the broker confirmed its copy:
//! stopped at any point, a replay loses nothing and at worst sends one copy twice, which the
//! inbox absorbs.

use std::collections::HashSet;
use std::ops::ControlFlow;

use anyhow::Context as _;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use shop_shared::messaging::envelope;

use super::dead_letter::{DeadLetter, Groups};
use super::held::{Held, HeldLetter, WINDOW as HELD_AT_MOST};
use crate::cmd::inspect::decoded::Decoder;

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

/// Which messages a command acts on.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// The messages with these ids.
    Ids(&'a [String]),
    /// Every message.
    All,
    /// The messages of group N of `shop dlq list`.
    Group(usize),
}

/// Decides, one message at a time in queue order, whether a [`Pick`] takes it, and at the end
/// whether the pick named something that was not there.
#[derive(Debug)]
pub struct Chooser<'a> {
    pick: Pick<'a>,
    groups: Groups,
    found: HashSet<String>,
}

impl<'a> Chooser<'a> {
    /// Chooses by `pick`.
    pub fn new(pick: Pick<'a>) -> Self {
        Self {
            pick,
            groups: Groups::default(),
            found: HashSet::new(),
        }
    }

    /// Whether the pick takes `letter` (the next message in queue order).
    pub fn takes(&mut self, letter: &DeadLetter) -> bool {
        match self.pick {
            Pick::All => true,
            Pick::Group(number) => self.groups.add(letter) == number,
            Pick::Ids(ids) => {
                let taken = letter
                    .view
                    .message_id
                    .as_ref()
                    .is_some_and(|id| ids.contains(id));
                if taken {
                    self.found.insert(letter.id().to_owned());
                }
                taken
            }
        }
    }

    /// Once every message was looked at: fails when the pick named a message or a group that
    /// was not there (`done` says what was done anyway).
    pub fn check(&self, dlq: &str, done: &str) -> anyhow::Result<()> {
        match self.pick {
            Pick::All => Ok(()),
            Pick::Ids(ids) => {
                let missing: Vec<&str> = ids
                    .iter()
                    .filter(|id| !self.found.contains(id.as_str()))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    anyhow::bail!(
                        "not in {dlq}: {}; {done} (`shop dlq show` lists the ids)",
                        missing.join(", ")
                    )
                }
            }
            Pick::Group(number) if number == 0 || number > self.groups.len() => {
                let groups = self.groups.len();
                anyhow::bail!(
                    "{dlq} has {groups} group{} (group {number} asked for); {done} (`shop dlq list` shows them)",
                    if groups == 1 { "" } else { "s" }
                )
            }
            Pick::Group(_) => Ok(()),
        }
    }
}

/// Told about every step; the command's progress bar and lines, or a test.
pub trait Observer {
    /// The DLQ holds `total` messages, which are looked at one by one.
    fn started(&mut self, _total: usize) {}
    /// One more message was looked at.
    fn looked(&mut self) {}
    /// The broker confirmed the copy of `letter`, which is still in the DLQ: returning
    /// `Break` stops here, as a killed process would.
    fn confirmed(&mut self, _letter: &DeadLetter) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// `letter`, chosen, is done with.
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

/// How a replay goes.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The consuming queue the copies go to.
    pub queue: &'a str,
    /// A message replayed this many times already stays.
    pub max_replays: u32,
    /// Say what would be replayed; change nothing.
    pub dry_run: bool,
}

/// Replays what `pick` chooses of the held DLQ to `options.queue`, reading the queue once in
/// order: copies go in windows of [`WINDOW`] as the messages come, so memory holds at most a
/// window of bodies, whatever the queue's depth. Messages chosen by id are first gathered (as
/// many as ids were given) so that an id that is not there fails the command with nothing done.
pub async fn replay(
    held: &mut Held,
    decoder: &Decoder,
    pick: Pick<'_>,
    options: Options<'_>,
    observer: &mut dyn Observer,
) -> anyhow::Result<Summary> {
    observer.started(held.depth);
    let mut chooser = Chooser::new(pick);
    let mut run = Run {
        options,
        replayed_at: envelope::rfc3339_now(),
        due: Vec::new(),
        summary: Summary::default(),
    };
    let gather = matches!(pick, Pick::Ids(_));
    let mut gathered = Vec::new();
    while let Some(held_letter) = held.next(decoder).await? {
        observer.looked();
        if !chooser.takes(&held_letter.letter) {
            held.keep(held_letter).await?;
            continue;
        }
        if gather {
            // Held until every id was looked for: as many as ids were given, within the window.
            anyhow::ensure!(
                gathered.len() < HELD_AT_MOST,
                "more than {HELD_AT_MOST} of the chosen ids are in {}: replay at most {HELD_AT_MOST} at a time (or --all, --group); nothing was done",
                held.dlq
            );
            gathered.push(held_letter);
        } else if run.offer(held, held_letter, observer).await?.is_break() {
            return Ok(run.summary);
        }
    }
    chooser.check(&held.dlq, "nothing was done")?;
    for held_letter in gathered {
        if run.offer(held, held_letter, observer).await?.is_break() {
            return Ok(run.summary);
        }
    }
    // Interrupted or not, the summary says so.
    let _ = run.flush(held, observer).await?;
    Ok(run.summary)
}

/// A replay in progress: the copies due to be published, and the counts so far.
struct Run<'a> {
    options: Options<'a>,
    replayed_at: String,
    due: Vec<HeldLetter>,
    summary: Summary,
}

impl Run<'_> {
    /// Takes one chosen message: skipped, counted (dry run) or due; a full window is sent.
    async fn offer(
        &mut self,
        held: &mut Held,
        held_letter: HeldLetter,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<ControlFlow<()>> {
        let letter = &held_letter.letter;
        if letter.replayed_count >= self.options.max_replays {
            self.summary.skipped += 1;
            observer.finished(letter, &Outcome::OverLimit);
            held.keep(held_letter).await?;
        } else if self.options.dry_run {
            self.summary.replayed += 1;
            observer.finished(letter, &Outcome::WouldReplay);
            held.keep(held_letter).await?;
        } else {
            self.due.push(held_letter);
            if self.due.len() >= WINDOW {
                return self.flush(held, observer).await;
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Publishes the due copies, awaits their confirms and removes each original once its
    /// copy is confirmed.
    async fn flush(
        &mut self,
        held: &Held,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<ControlFlow<()>> {
        let queue = self.options.queue;
        let window = std::mem::take(&mut self.due);
        let mut confirms = Vec::with_capacity(window.len());
        for held_letter in &window {
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
                    copy_properties(held_letter, &self.replayed_at),
                )
                .await
                .with_context(|| format!("cannot publish to {queue}"))?;
            confirms.push(confirm);
        }
        for (held_letter, confirm) in window.iter().zip(confirms) {
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
                self.summary.interrupted = true;
                return Ok(ControlFlow::Break(()));
            }
            held.remove(held_letter.tag).await?;
            self.summary.replayed += 1;
            observer.finished(letter, &Outcome::Replayed);
        }
        Ok(ControlFlow::Continue(()))
    }
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
