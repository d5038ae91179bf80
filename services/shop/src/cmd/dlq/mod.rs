//! `shop dlq`: the dead-letter queues read, replayed and purged, with every body decoded.
//!
//! QUEUE is a consuming queue (`inventory`, or a polyglot consumer's such as
//! `python-consumer`); its dead letters are in `QUEUE.dlq`. Every name takes `AMQP_PREFIX`.
//! Nothing here loses a message: see [`held`] for how messages are taken in hand and
//! [`replay`] for how copies go back.

pub mod dead_letter;
pub mod held;
mod list;
mod purge;
pub mod replay;
mod replaying;

use list::{list, show};
use purge::purge;
use replaying::{ReplayOptions, replay_command};

use std::io::Write;

use shop_shared::config::AmqpConfig;

use crate::cmd::inspect::broker::Broker;
use crate::cmd::inspect::decoded::{self, Decoder};
use replay::Pick;

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
