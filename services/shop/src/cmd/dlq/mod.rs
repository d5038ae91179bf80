//! `shop dlq`: the dead-letter queues read, replayed and purged, with every body decoded.
//!
//! QUEUE is a consuming queue (`inventory`, or a polyglot consumer's such as
//! `python-consumer`); its dead letters are in `QUEUE.dlq`. Every name takes `AMQP_PREFIX`.
//! Nothing here loses a message: see [`held`] for how messages are taken in hand and
//! [`replay`] for how copies go back.

pub mod dead_letter;
pub mod held;
pub mod replay;

use std::io::{BufRead as _, IsTerminal as _, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use shop_shared::config::AmqpConfig;

use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::{self, Decoder};
use dead_letter::{DeadLetter, Groups};
use held::Held;
use replay::{Chooser, Observer, Outcome, Pick};

/// The consuming queues `shop dlq list` looks at without being told: shop's own and the
/// examples' defaults. AMQP 0-9-1 cannot list a broker's queues; name others with `--queue`.
pub const KNOWN_QUEUES: &[&str] = &[
    "order",
    "inventory",
    "notification",
    "python-consumer",
    "node-consumer",
];

/// `shop dlq …`.
#[derive(Debug, clap::Parser)]
#[command(name = "shop dlq")]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// Every dead-letter queue with its depth, its messages grouped by type and reason (ids
    /// and numbers masked), each group with a count and its oldest and newest death.
    List {
        /// Also look at these consuming queues' DLQs (shop's queues and the examples'
        /// default queues are always looked at; AMQP cannot list the others).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// One JSON object per dead-letter queue and line.
        #[arg(long)]
        json: bool,
    },
    /// The messages of QUEUE.dlq, oldest first: ids, type, routing key, reason, retries,
    /// when it died, headers and the body decoded into proto3 JSON.
    Show {
        /// The consuming queue, e.g. `inventory`.
        queue: String,
        /// Show at most this many (default: all).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
    },
    /// Send chosen messages back to QUEUE only, with the same body and message_id (the
    /// inbox still de-duplicates); each leaves QUEUE.dlq once the broker confirmed its copy.
    Replay {
        /// The consuming queue, e.g. `inventory`.
        queue: String,
        #[command(flatten)]
        pick: ReplayPick,
        /// A message replayed this many times already stays in the DLQ, with a warning.
        #[arg(long, value_name = "N", default_value_t = 3)]
        max_replays: u32,
        /// Say what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object per chosen message and line, then one with the counts.
        #[arg(long)]
        json: bool,
    },
    /// Delete chosen messages from QUEUE.dlq for good; asks first unless --yes.
    Purge {
        /// The consuming queue, e.g. `inventory`.
        queue: String,
        #[command(flatten)]
        pick: PurgePick,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ReplayPick {
    /// These messages (repeat the flag, or separate ids with commas).
    #[arg(long = "message-id", value_name = "ID", value_delimiter = ',')]
    message_ids: Vec<String>,
    /// Every message.
    #[arg(long)]
    all: bool,
    /// The messages of group N of `shop dlq list`.
    #[arg(long, value_name = "N")]
    group: Option<usize>,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct PurgePick {
    /// These messages (repeat the flag, or separate ids with commas).
    #[arg(long = "message-id", value_name = "ID", value_delimiter = ',')]
    message_ids: Vec<String>,
    /// Every message.
    #[arg(long)]
    all: bool,
}

/// Runs `shop dlq …`, printing to `out`.
pub async fn run(args: DlqArgs, config: &AmqpConfig, out: &mut dyn Write) -> anyhow::Result<()> {
    let decoder = Decoder::new()?;
    let broker = Broker::connect(config, "dlq").await?;
    let result = match &args.command {
        DlqCommand::List { queues, json } => list(&broker, &decoder, queues, *json, out).await,
        DlqCommand::Show { queue, limit, json } => {
            show(&broker, &decoder, queue, *limit, *json, out).await
        }
        DlqCommand::Replay {
            queue,
            pick,
            max_replays,
            dry_run,
            json,
        } => {
            let pick = match (pick.all, pick.group) {
                (true, _) => Pick::All,
                (_, Some(n)) => Pick::Group(n),
                _ => Pick::Ids(&pick.message_ids),
            };
            let options = ReplayOptions {
                max_replays: *max_replays,
                dry_run: *dry_run,
                json: *json,
            };
            replay_command(&broker, &decoder, queue, pick, &options, out).await
        }
        DlqCommand::Purge { queue, pick, yes } => {
            let pick = if pick.all {
                Pick::All
            } else {
                Pick::Ids(&pick.message_ids)
            };
            purge(&broker, &decoder, queue, pick, *yes, out).await
        }
    };
    broker.close().await;
    result
}

/// `inventory` and `inventory.dlq` both name the consuming queue `inventory`.
fn consuming_queue(queue: &str) -> &str {
    queue.strip_suffix(".dlq").unwrap_or(queue)
}

async fn list(
    broker: &Broker,
    decoder: &Decoder,
    extra: &[String],
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut queues: Vec<&str> = KNOWN_QUEUES.to_vec();
    for queue in extra {
        let queue = consuming_queue(queue);
        if broker.depth(&broker.names.dlq(queue)).await?.is_none() {
            anyhow::bail!(
                "there is no queue {} on {}",
                broker.names.dlq(queue),
                broker.url
            );
        }
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    let mut found = 0;
    for queue in queues {
        let dlq = broker.names.dlq(queue);
        if broker.depth(&dlq).await?.is_none() {
            continue;
        }
        found += 1;
        let mut held = Held::take(broker, &dlq).await?;
        let mut groups = Groups::default();
        let read = async {
            while let Some(held_letter) = held.next(decoder).await? {
                groups.add(&held_letter.letter);
                held.keep(held_letter).await?;
            }
            anyhow::Ok(())
        }
        .await;
        let depth = held.taken;
        held.release().await?;
        read?;
        let groups = groups.into_vec();
        if json {
            let line = json!({
                "queue": dlq,
                "consumer_queue": queue,
                "depth": depth,
                "groups": groups.iter().map(dead_letter::Group::json).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
            continue;
        }
        writeln!(out, "{dlq}: {}", count(depth, "message"))?;
        for group in &groups {
            writeln!(
                out,
                "  group {}: {} × {}\n    reason: {}\n    died: {} … {}",
                group.number,
                group.count,
                group.message_type,
                group.reason,
                time_or_unknown(group.oldest),
                time_or_unknown(group.newest),
            )?;
        }
    }
    if found == 0 && !json {
        writeln!(
            out,
            "no dead-letter queue on {} among {} (name others with --queue)",
            broker.url,
            KNOWN_QUEUES
                .iter()
                .map(|q| broker.names.dlq(q))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(())
}

async fn show(
    broker: &Broker,
    decoder: &Decoder,
    queue: &str,
    limit: Option<usize>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let dlq = broker.names.dlq(consuming_queue(queue));
    let mut held = Held::take(broker, &dlq).await?;
    let result = show_held(&mut held, decoder, limit.unwrap_or(usize::MAX), json, out).await;
    held.release().await?;
    result
}

/// Writes the first `limit` held messages as they come, then reads the rest without keeping
/// them (the queue is taken whole, so that it goes back in its order).
async fn show_held(
    held: &mut Held,
    decoder: &Decoder,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if !json {
        writeln!(
            out,
            "{}: {}, showing {}",
            held.dlq,
            count(held.depth, "message"),
            held.depth.min(limit)
        )?;
    }
    while held.taken < limit {
        let Some(held_letter) = held.next(decoder).await? else {
            return Ok(());
        };
        if json {
            writeln!(out, "{}", held_letter.letter.json())?;
        } else {
            write_letter(out, &held_letter.letter)?;
        }
        held.keep(held_letter).await?;
    }
    held.keep_rest(decoder).await
}

fn write_letter(out: &mut dyn Write, letter: &DeadLetter) -> std::io::Result<()> {
    let v = &letter.view;
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "\nmessage {}  {}", letter.id(), letter.type_name())?;
    writeln!(out, "  routing key  {}", v.routing_key)?;
    writeln!(out, "  reason       {}", letter.reason)?;
    writeln!(
        out,
        "  retries      {}   replayed {}",
        letter.retry_count, letter.replayed_count
    )?;
    writeln!(out, "  died at      {}", time_or_unknown(letter.died_at))?;
    writeln!(out, "  correlation  {}", or_dash(&v.correlation_id))?;
    writeln!(out, "  causation    {}", or_dash(&v.causation_id))?;
    writeln!(out, "  trace        {}", or_dash(&v.trace_id))?;
    writeln!(out, "  actor        {}", or_dash(&v.actor_id))?;
    writeln!(
        out,
        "  headers      {}",
        serde_json::Value::Object(v.headers.clone())
    )?;
    match &letter.body.error {
        None => {
            let body = serde_json::to_string_pretty(&letter.body.json).unwrap_or_default();
            writeln!(
                out,
                "  body         {}",
                body.replace('\n', "\n               ")
            )
        }
        Some(error) => writeln!(
            out,
            "  body         null ({error})\n  body (hex)   {}",
            letter.body_hex
        ),
    }
}

struct ReplayOptions {
    max_replays: u32,
    dry_run: bool,
    json: bool,
}

async fn replay_command(
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
    let result = replay::replay(
        &mut held,
        decoder,
        pick,
        replay::Options {
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

async fn purge(
    broker: &Broker,
    decoder: &Decoder,
    queue: &str,
    pick: Pick<'_>,
    yes: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let dlq = broker.names.dlq(consuming_queue(queue));
    let mut held = Held::take(broker, &dlq).await?;
    let result = purge_held(&mut held, decoder, pick, yes, out).await;
    held.release().await?;
    result
}

/// A message chosen for deletion: what the question and the answer name of it.
struct Doomed {
    tag: u64,
    id: String,
    message_type: String,
}

async fn purge_held(
    held: &mut Held,
    decoder: &Decoder,
    pick: Pick<'_>,
    yes: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if matches!(pick, Pick::All) && !yes && held.depth > 0 {
        // Everything: asked by the count first, then deleted as it is read (a deep queue is
        // never held whole).
        eprintln!(
            "about to delete all {} of {} for good",
            count(held.depth, "message"),
            held.dlq
        );
        confirm_deletion()?;
    }
    let mut chooser = Chooser::new(pick);
    let mut chosen = Vec::new();
    let mut deleted = 0;
    while let Some(held_letter) = held.next(decoder).await? {
        if !chooser.takes(&held_letter.letter) {
            held.keep(held_letter).await?;
        } else if matches!(pick, Pick::All) {
            held.remove(held_letter.tag).await?;
            deleted += 1;
            let letter = &held_letter.letter;
            writeln!(out, "  {}  {}", letter.id(), letter.type_name())?;
        } else {
            anyhow::ensure!(
                chosen.len() < held::WINDOW,
                "more than {} of the chosen ids are in {}: purge at most {} at a time (or --all); nothing was deleted",
                held::WINDOW,
                held.dlq,
                held::WINDOW
            );
            chosen.push(Doomed {
                tag: held_letter.tag,
                id: held_letter.letter.id().to_owned(),
                message_type: held_letter.letter.type_name().to_owned(),
            });
        }
    }
    if matches!(pick, Pick::All) {
        if deleted == 0 {
            writeln!(out, "{} is empty: nothing to delete", held.dlq)?;
            return Ok(());
        }
        writeln!(
            out,
            "deleted {} from {}",
            count(deleted, "message"),
            held.dlq
        )?;
        writeln!(out, "left in {}: 0", held.dlq)?;
        return Ok(());
    }
    chooser.check(&held.dlq, "nothing was deleted")?;
    if chosen.is_empty() {
        writeln!(out, "{} is empty: nothing to delete", held.dlq)?;
        return Ok(());
    }
    if !yes {
        eprintln!(
            "about to delete {} from {} for good:",
            count(chosen.len(), "message"),
            held.dlq
        );
        for doomed in &chosen {
            eprintln!("  {}  {}", doomed.id, doomed.message_type);
        }
        confirm_deletion()?;
    }
    for doomed in &chosen {
        held.remove(doomed.tag).await?;
    }
    writeln!(
        out,
        "deleted {} from {}:",
        count(chosen.len(), "message"),
        held.dlq
    )?;
    for doomed in &chosen {
        writeln!(out, "  {}  {}", doomed.id, doomed.message_type)?;
    }
    writeln!(out, "left in {}: {}", held.dlq, held.taken - chosen.len())?;
    Ok(())
}

/// Asks on the terminal whether to delete; fails unless the answer is yes.
fn confirm_deletion() -> anyhow::Result<()> {
    eprint!("delete them? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        anyhow::bail!("not confirmed: nothing was deleted (pass --yes to skip the question)");
    }
    Ok(())
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn time_or_unknown(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(|| "unknown".into(), decoded::rfc3339)
}
