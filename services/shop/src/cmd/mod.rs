//! The `shop` command: one [`Command`] variant per subcommand, each run by its own module, and
//! what each wants of the process (its log level, the span recorder of the benchmark).
//!
//! - `shop up` runs the four services in one process; `shop serve <service>` runs one (what the
//!   containers run) — both from [`crate::system`].
//! - [`bench`] — `shop bench`: load, limits, consistency, with every safety on.
//! - [`keys`] — `shop keys`: the token signing keys, listed and rotated.
//! - [`dlq`] — `shop dlq`: dead letters read, replayed and purged.
//! - [`events`] — `shop events tail`: the events as they pass, decoded.
//! - [`schedule`] — `shop schedule`: the messages an outbox holds for later.
//! - [`outbox`] — `shop outbox`: parked outbox rows listed and returned to the relay.
//! - [`topology`] — `shop topology`: every consuming service's queue, declared for operators.
//! - [`catalog`] — `shop catalog`: the AsyncAPI document of the events.
//! - [`inspect`] — what the commands that read the broker share.

pub mod bench;
pub mod catalog;
pub mod dlq;
pub mod events;
pub mod inspect;
pub mod keys;
pub mod outbox;
pub mod schedule;
pub mod topology;

use clap::{Parser, Subcommand};
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::MessagingConfig;
use tokio_util::sync::CancellationToken;

use crate::system;

/// shop: type-safe, event-driven microservices over gRPC and RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "shop", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `shop` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all four services in this process (user 50051, order 50052, inventory 50053,
    /// notification 50054), configured from the environment. Runs in the foreground until
    /// Ctrl-C or SIGTERM, then drains and stops.
    Up,
    /// Run one service, in the foreground until Ctrl-C or SIGTERM.
    Serve {
        /// Which service.
        #[arg(value_enum)]
        service: system::ServiceName,
    },
    /// Benchmark the whole system with every safety on: baselines, max throughput, fixed
    /// rate, consistency. With no phase flag: all of them (20,000 orders, then 500/s for 30 s).
    Bench(bench::BenchArgs),
    /// List or rotate the user service's token signing keys (reads USER_DATABASE_URL).
    Keys(keys::KeysArgs),
    /// Read, replay and purge the dead-letter queues, every body decoded (reads AMQP_URL,
    /// AMQP_PREFIX).
    Dlq(dlq::DlqArgs),
    /// Watch the events on shop.events as they pass, decoded (reads AMQP_URL, AMQP_PREFIX).
    Events(events::EventsArgs),
    /// List, show and cancel the messages a service's outbox holds for a later time, such as
    /// each pending order's reservation deadline (reads <SERVICE>_DATABASE_URL).
    Schedule(schedule::ScheduleArgs),
    /// List the outbox rows parked after failed publishes, and return them to the relay
    /// (reads <SERVICE>_DATABASE_URL).
    Outbox(outbox::OutboxArgs),
    /// Declare the broker topology (every consuming service's queue, DLQ and bindings) before
    /// the services start, or list it (reads AMQP_URL, AMQP_PREFIX, QUEUE_REPLICAS).
    Topology(topology::TopologyArgs),
    /// Print the event catalog: an AsyncAPI 3.0 document (JSON) generated from the protos.
    Catalog,
}

impl Command {
    /// The log level when `RUST_LOG` does not say: the services log at INFO; the benchmark
    /// keeps their per-message lines out of its measurements, and the operator tools and the
    /// catalog print their output alone, so they log warnings and errors only.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Up | Command::Serve { .. } => "info",
            _ => "warn",
        }
    }

    /// Whether the command reads where an order's time goes off the spans of this process
    /// (the benchmark's hops).
    pub fn records_hops(&self) -> bool {
        matches!(self, Command::Bench(_))
    }

    /// Runs the command until it is done or `shutdown`; `hops` records the spans when
    /// [`Command::records_hops`].
    pub async fn run(
        self,
        shutdown: CancellationToken,
        hops: bench::hops::HopRecorder,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout();
        match self {
            Command::Up => system::up(shutdown).await,
            Command::Serve { service } => system::serve(service, shutdown).await,
            Command::Catalog => {
                use std::io::Write as _;
                let doc = catalog::render(shop_proto::FILE_DESCRIPTOR_SET)?;
                write!(out, "{doc}")?;
                Ok(())
            }
            Command::Keys(args) => keys::run(args).await,
            Command::Schedule(args) => schedule::run(args, &mut out).await,
            Command::Outbox(args) => outbox::run(args, &mut out).await,
            Command::Topology(args) => {
                let replicas = MessagingConfig::from_env()?.queue_replicas;
                topology::run(args, &AmqpConfig::from_env()?, replicas, &mut out).await
            }
            Command::Dlq(args) => dlq::run(args, &AmqpConfig::from_env()?, &mut out).await,
            Command::Events(args) => {
                events::run(args, &AmqpConfig::from_env()?, shutdown, &mut out).await
            }
            Command::Bench(args) => match bench::run(args, hops).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(anyhow::anyhow!(
                    "the run broke consistency (see FAILED above)"
                )),
                Err(e) => Err(e),
            },
        }
    }
}
