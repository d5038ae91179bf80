//! `shop`: the quick start and the operator's tool. This file parses the command line, sets up
//! logging as the command wants it, runs the command ([`shop::cmd::Command::run`]) and turns its
//! result into an exit code — nothing else.

use clap::{CommandFactory as _, FromArgMatches as _};
use shop::cmd::Cli;

/// mimalloc instead of the system allocator: a service allocates and frees small buffers
/// for every message, row and span, from several threads (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `shop up --help` and `shop serve --help` list the environment variables.
    let matches = Cli::command()
        .mut_subcommand("up", |c| c.after_help(shop::settings::help()))
        .mut_subcommand("serve", |c| c.after_help(shop::settings::help()))
        .get_matches();
    let command = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli.command,
        Err(e) => e.exit(),
    };
    let config = shop_shared::telemetry::TelemetryConfig {
        default_filter: command.default_log_level().into(),
        ..shop_shared::telemetry::TelemetryConfig::from_env()
    };
    let json_logs = config.json;
    let hops = shop::cmd::bench::hops::HopRecorder::default();
    let telemetry = if command.records_hops() {
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
    match command.run(shutdown, hops).await {
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
