//! `shop`: the quick start and the operator's tool.
//!
//! - `shop up` runs the four services in one process with the defaults.
//! - `shop serve <service>` runs one service (what the containers run).
//! - `shop bench` measures the system with every safety on.
//! - `shop keys` lists and rotates the token signing keys.
//! - `shop dlq` reads, replays and purges dead letters; `shop events tail` shows events.
//! - `shop schedule` lists, shows and cancels the messages an outbox holds for later.
//! - `shop outbox` lists the rows an outbox parked and returns them to the relay.
//! - `shop topology apply` declares every consuming service's queue before the services start.

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use shop::system;

/// shop: type-safe, event-driven microservices over gRPC and RabbitMQ.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    Bench(shop::bench::BenchArgs),
    /// List or rotate the user service's token signing keys (reads USER_DATABASE_URL).
    Keys(shop::keys::KeysArgs),
    /// Read, replay and purge the dead-letter queues, every body decoded (reads AMQP_URL,
    /// AMQP_PREFIX).
    Dlq(shop::dlq::DlqArgs),
    /// Watch the events on shop.events as they pass, decoded (reads AMQP_URL, AMQP_PREFIX).
    Events(shop::events_tail::EventsArgs),
    /// List, show and cancel the messages a service's outbox holds for a later time, such as
    /// each pending order's reservation deadline (reads <SERVICE>_DATABASE_URL).
    Schedule(shop::schedule::ScheduleArgs),
    /// List the outbox rows parked after failed publishes, and return them to the relay
    /// (reads <SERVICE>_DATABASE_URL).
    Outbox(shop::outbox::OutboxArgs),
    /// Declare the broker topology (every consuming service's queue, DLQ and bindings) before
    /// the services start, or list it (reads AMQP_URL, AMQP_PREFIX, QUEUE_REPLICAS).
    Topology(shop::topology::TopologyArgs),
    /// Print the event catalog: an AsyncAPI 3.0 document (JSON) generated from the protos.
    Catalog,
}

/// mimalloc instead of the system allocator: a service allocates and frees small buffers
/// for every message, row and span, from several threads (see the README's Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `shop up --help` and `shop serve --help` list the environment variables.
    let matches = Cli::command()
        .mut_subcommand("up", |c| c.after_help(shop::settings::help()))
        .mut_subcommand("serve", |c| c.after_help(shop::settings::help()))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if matches!(cli.command, Command::Catalog) {
        return match shop::catalog::render(shop_proto::FILE_DESCRIPTOR_SET) {
            Ok(doc) => {
                print!("{doc}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // The benchmark keeps the services' per-message info logs out of its measurements.
    // So do the operator tools, whose output is what they print.
    let quiet = matches!(
        cli.command,
        Command::Bench(_)
            | Command::Dlq(_)
            | Command::Events(_)
            | Command::Schedule(_)
            | Command::Topology(_)
            | Command::Outbox(_)
    ) && std::env::var_os("RUST_LOG").is_none();
    let config = shop_shared::telemetry::TelemetryConfig {
        default_filter: if quiet { "warn" } else { "info" }.into(),
        ..shop_shared::telemetry::TelemetryConfig::from_env()
    };
    let json_logs = config.json;
    // The benchmark reads where an order's time goes off the spans, in this process.
    let hops = shop::bench::hops::HopRecorder::default();
    let telemetry = if matches!(cli.command, Command::Bench(_)) {
        shop_shared::telemetry::init_with_processor("shop", &config, hops.clone())
    } else {
        shop_shared::telemetry::init_with("shop", &config)
    };
    let _telemetry = match telemetry {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot initialise logging: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = shop_shared::shutdown::on_signal();
    let result = match cli.command {
        Command::Up => system::up(shutdown).await,
        Command::Serve { service } => system::serve(service, shutdown).await,
        Command::Catalog => Ok(()),
        Command::Keys(args) => shop::keys::run(args).await,
        Command::Schedule(args) => shop::schedule::run(args, &mut std::io::stdout()).await,
        Command::Outbox(args) => shop::outbox::run(args, &mut std::io::stdout()).await,
        Command::Topology(args) => {
            let config = shop_shared::config::AmqpConfig::from_env();
            match shop_shared::config::MessagingConfig::from_env() {
                Ok(messaging) => {
                    shop::topology::run(
                        args,
                        &config,
                        messaging.queue_replicas,
                        &mut std::io::stdout(),
                    )
                    .await
                }
                Err(e) => Err(e),
            }
        }
        Command::Dlq(args) => {
            let config = shop_shared::config::AmqpConfig::from_env();
            shop::dlq::run(args, &config, &mut std::io::stdout()).await
        }
        Command::Events(args) => {
            let config = shop_shared::config::AmqpConfig::from_env();
            shop::events_tail::run(args, &config, shutdown, &mut std::io::stdout()).await
        }
        Command::Bench(args) => match shop::bench::run(args, hops).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(anyhow::anyhow!(
                "the run broke consistency (see FAILED above)"
            )),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `shop dlq show --json | head -1`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        // Said once: as a log record where logs are JSON (a log pipeline reads them), as a
        // plain line for a person otherwise.
        Err(e) if json_logs => {
            tracing::error!(error = %format!("{e:#}"), "shop stopped with an error");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
