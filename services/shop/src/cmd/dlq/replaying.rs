//! `shop dlq replay`: the chosen dead letters sent back to their own queue, printed as they go.

use std::io::{IsTerminal as _, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::dead_letter::DeadLetter;
use super::held::Held;
use super::replay::{Observer, Outcome, Pick};
use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::Decoder;

use super::{consuming_queue, count};

pub(super) struct ReplayOptions {
    pub(super) max_replays: u32,
    pub(super) dry_run: bool,
    pub(super) json: bool,
}

pub(super) async fn replay_command(
    broker: &Broker,
    decoder: &Decoder,
    queue: &str,
    pick: Pick<'_>,
    options: &ReplayOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let queue = consuming_queue(queue);
    let (dlq, target) = (broker.names.dlq(queue), broker.names.queue(queue));
    broker
        .existing_depth(
            &target,
            " (replay sends messages back to the queue they died in)",
        )
        .await?;
    let mut held = Held::take(broker, &dlq).await?;
    let mut observer = Printer::new(options.json, options.dry_run, options.max_replays, out);
    let result = super::replay::replay(
        &mut held,
        decoder,
        pick,
        super::replay::Options {
            queue: &target,
            max_replays: options.max_replays,
            dry_run: options.dry_run,
        },
        &mut observer,
    )
    .await;
    let depth = held.taken;
    let released = held.release().await;
    let summary = result?;
    released?;
    observer.bar.finish_and_clear();
    let left = depth - if options.dry_run { 0 } else { summary.replayed };
    let verb = if options.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    if options.json {
        let key = if options.dry_run {
            "would_replay"
        } else {
            "replayed"
        };
        writeln!(
            observer.out,
            "{}",
            json!({ key: summary.replayed, "skipped": summary.skipped, "left": left, "queue": target, "dlq": dlq })
        )?;
    } else {
        writeln!(
            observer.out,
            "{verb} {} to {target}; skipped {} (replayed {} times already, --max-replays); left in {dlq}: {}",
            count(summary.replayed, "message"),
            summary.skipped,
            options.max_replays,
            left
        )?;
    }
    Ok(())
}

/// The command's observer: a progress bar on a terminal, a line per message it should know
/// about.
struct Printer<'a> {
    json: bool,
    dry_run: bool,
    max_replays: u32,
    out: &'a mut dyn Write,
    bar: ProgressBar,
}

impl<'a> Printer<'a> {
    fn new(json: bool, dry_run: bool, max_replays: u32, out: &'a mut dyn Write) -> Self {
        Self {
            json,
            dry_run,
            max_replays,
            out,
            bar: ProgressBar::hidden(),
        }
    }
}

impl Observer for Printer<'_> {
    fn started(&mut self, total: usize) {
        // Drawn on stderr, and only when it is a terminal and the queue is large.
        if total >= 100 && !self.dry_run && std::io::stderr().is_terminal() {
            self.bar = ProgressBar::new(total as u64).with_style(
                ProgressStyle::with_template(
                    "replaying {bar:40} {pos}/{len} looked at ({eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
        }
    }

    fn looked(&mut self) {
        self.bar.inc(1);
    }

    fn finished(&mut self, letter: &DeadLetter, outcome: &Outcome) {
        if *outcome == Outcome::OverLimit {
            self.bar.suspend(|| {
                eprintln!(
                    "warning: {} ({}) was replayed {} times already (--max-replays {}): it stays in the DLQ",
                    letter.id(),
                    letter.type_name(),
                    letter.replayed_count,
                    self.max_replays
                );
            });
        }
        let line = if self.json {
            json!({
                "message_id": letter.view.message_id,
                "type": letter.view.message_type,
                "routing_key": letter.view.routing_key,
                "outcome": outcome.as_str(),
                // How often it has been replayed now.
                "replayed_count": letter.replayed_count + u32::from(*outcome == Outcome::Replayed),
            })
            .to_string()
        } else if self.dry_run && *outcome == Outcome::WouldReplay {
            format!(
                "would replay {}  {}  {}",
                letter.id(),
                letter.type_name(),
                letter.view.routing_key
            )
        } else {
            return;
        };
        let _ = writeln!(self.out, "{line}");
    }
}
