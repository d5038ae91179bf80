//! `shop`: the quick start and the operator's tool.
//!
//! - `shop up` runs the four services in one process with the defaults.
//! - `shop serve <service>` runs one service (what the containers run).

use clap::{Parser, Subcommand};
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
    /// notification 50054), configured from the environment.
    Up,
    /// Run one service.
    Serve {
        /// Which service.
        #[arg(value_enum)]
        service: system::ServiceName,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = match shop_shared::telemetry::init("shop") {
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "shop stopped with an error");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
