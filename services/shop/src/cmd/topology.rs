//! `shop topology`: the broker topology every service relies on, for operators.
//!
//! - `shop topology apply` declares it: the exchange, and every consuming service's quorum
//!   queue, its dead-letter queue and its bindings, from the one table of who consumes what
//!   (`shop_shared::messaging::topology::CONSUMERS`). Run it before the services (the
//!   Kubernetes manifests run it as a Job), so that an event published before its consumer
//!   first started waits in that consumer's queue. Idempotent: what exists is left as it is.
//! - `shop topology check [--wait <s>]` looks (a passive declare, which needs no permission)
//!   until every consuming service's queue exists: the init container of each service in
//!   `deploy/k8s`, so that none starts before the topology Job declared the queues.
//! - `shop topology list` prints the table without touching the broker.
//!
//! It reads `AMQP_URL`, `AMQP_PREFIX` and `QUEUE_REPLICAS` like the services. Retry queues are
//! not declared here: their delays are each service's own settings, and each service declares
//! its own at start.

use std::io::Write;

use anyhow::Context as _;
use serde_json::json;
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::Names;
use shop_shared::messaging::topology::{self, CONSUMERS, ConsumerQueue};

use crate::cmd::inspect::broker::Broker;

/// `shop topology …`.
#[derive(Debug, clap::Parser)]
#[command(name = "shop topology")]
pub struct TopologyArgs {
    #[command(subcommand)]
    command: TopologyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TopologyCommand {
    /// Declare the exchange and every consuming service's queue, DLQ and bindings.
    Apply {
        /// One JSON object per queue and line.
        #[arg(long)]
        json: bool,
    },
    /// Check that every consuming service's queue exists (looking only: no permission needed),
    /// waiting up to `--wait` seconds for them; what Kubernetes runs before each service.
    Check {
        /// How long to wait for the queues, in seconds (0: look once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Print who consumes what (no broker needed).
    List {
        /// One JSON object per queue and line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `args` against the broker of `config`, writing to `out`; `replicas` is
/// `QUEUE_REPLICAS`.
pub async fn run(
    args: TopologyArgs,
    config: &AmqpConfig,
    replicas: Option<u32>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match args.command {
        TopologyCommand::List { json } => {
            let names = Names::new(config.prefix.clone());
            for consumer in CONSUMERS {
                print_queue(out, &names, consumer, json, None)?;
            }
            Ok(())
        }
        TopologyCommand::Check { wait } => {
            let broker = Broker::connect(config, "topology").await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            loop {
                let mut missing = Vec::new();
                for consumer in CONSUMERS {
                    let queue = broker.names.queue(consumer.service);
                    if broker.depth(&queue).await?.is_none() {
                        missing.push(queue);
                    }
                }
                if missing.is_empty() {
                    writeln!(out, "every consuming service's queue exists")?;
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "missing on {}: {} (run `shop topology apply` with a broker user that may declare them)",
                        broker.url,
                        missing.join(", ")
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
        TopologyCommand::Apply { json } => {
            let broker = Broker::connect(config, "topology").await?;
            let channel = broker.channel().await?;
            topology::declare_exchange(&channel, &broker.names)
                .await
                .with_context(|| {
                    format!(
                        "cannot declare the exchange {} on {}",
                        broker.names.exchange(),
                        broker.url
                    )
                })?;
            for consumer in CONSUMERS {
                let channel = broker.channel().await?;
                topology::declare_queue(&channel, &broker.names, consumer, replicas)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot declare the queue {} on {} (does the broker user have the \
                             configure, write and read permissions on it?)",
                            broker.names.queue(consumer.service),
                            broker.url
                        )
                    })?;
                let _ = channel.close(200, "declared").await;
                print_queue(out, &broker.names, consumer, json, Some(&broker.url))?;
            }
            Ok(())
        }
    }
}

fn print_queue(
    out: &mut impl Write,
    names: &Names,
    consumer: &ConsumerQueue,
    json: bool,
    declared_on: Option<&str>,
) -> anyhow::Result<()> {
    let queue = names.queue(consumer.service);
    if json {
        let line = json!({
            "queue": queue,
            "dlq": names.dlq(consumer.service),
            "exchange": names.exchange(),
            "routing_keys": consumer.routing_keys,
            "unbound": consumer.moved_from,
            "declared": declared_on.is_some(),
        });
        writeln!(out, "{line}")?;
        return Ok(());
    }
    let verb = if declared_on.is_some() {
        "declared "
    } else {
        ""
    };
    writeln!(
        out,
        "{verb}{queue} (dead letters: {}) bound to {}: {}",
        names.dlq(consumer.service),
        names.exchange(),
        consumer.routing_keys.join(", ")
    )?;
    if !consumer.moved_from.is_empty() {
        writeln!(
            out,
            "  unbound from {} (a newer shape replaced it)",
            consumer.moved_from.join(", ")
        )?;
    }
    Ok(())
}
