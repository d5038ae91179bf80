//! `shop outbox`: the rows an outbox parked as `dead` after `OUTBOX_MAX_ATTEMPTS` failures of
//! their own, for operators.
//!
//! - `shop outbox parked` lists them, oldest first, with the last error.
//! - `shop outbox unpark <message-id>…` (or `--all`) returns them to the relay, attempts reset,
//!   once what broke them is fixed; the relays are woken and publish them at once.
//!
//! They read `<SERVICE>_DATABASE_URL` (`--service`, default `order`) like `shop schedule`.

use std::io::Write;

use anyhow::Context as _;
use serde_json::json;
use shop_shared::messaging::parked;
use sqlx::PgPool;

use crate::cmd::inspect::decoded;
use crate::system::ServiceName;

/// The most rows `parked` shows, and the most ids `unpark` takes.
const LIMIT: usize = 1_000;

/// `shop outbox …`.
#[derive(Debug, clap::Parser)]
#[command(name = "shop outbox")]
pub struct OutboxArgs {
    /// Whose outbox (its `<SERVICE>_DATABASE_URL` is read).
    #[arg(long, value_enum, default_value = "order", global = true)]
    service: ServiceName,
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OutboxCommand {
    /// The parked rows, oldest first (at most 1,000), with the error that parked them.
    Parked {
        /// One JSON object per row and line.
        #[arg(long)]
        json: bool,
    },
    /// Return parked rows to the relay, their attempts reset.
    Unpark {
        /// Their message ids (see `shop outbox parked`; at most 1,000).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_ids: Vec<String>,
        /// Every parked row.
        #[arg(long)]
        all: bool,
    },
}

/// Runs `shop outbox …`, printing to `out`.
pub async fn run(args: OutboxArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let pool = crate::cmd::inspect::service_database(args.service).await?;
    let result = run_with(args, &pool, out).await;
    pool.close().await;
    result
}

/// Runs `shop outbox …` on the service database `pool` (its `--service` is not read).
pub async fn run_with(args: OutboxArgs, pool: &PgPool, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    match args.command {
        OutboxCommand::Parked { json } => {
            let rows = parked::list(&mut conn, LIMIT as i64)
                .await
                .context("cannot read the outbox (has the service started once?)")?;
            if rows.is_empty() && !json {
                writeln!(out, "no row is parked")?;
            }
            for row in &rows {
                if json {
                    let line = json!({
                        "message_id": row.message_id.to_string(),
                        "type": row.message_type,
                        "routing_key": row.routing_key,
                        "attempts": row.attempts,
                        "last_error": row.last_error,
                        "staged_at": decoded::rfc3339(row.created_at),
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{}  {}  {}  {} attempts  {}",
                        row.message_id,
                        decoded::rfc3339(row.created_at),
                        row.message_type,
                        row.attempts,
                        row.last_error.as_deref().unwrap_or("-")
                    )?;
                }
            }
            Ok(())
        }
        OutboxCommand::Unpark { message_ids, all } => {
            if message_ids.len() > LIMIT {
                anyhow::bail!(
                    "{} message ids given, at most {LIMIT} at a time (or --all)",
                    message_ids.len()
                );
            }
            let ids = message_ids
                .iter()
                .map(|raw| {
                    uuid::Uuid::parse_str(raw).map_err(|_| {
                        anyhow::anyhow!(
                            "{} is not a message id (a UUID; `shop outbox parked` shows them)",
                            shop_shared::input::shown(raw)
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let chosen = (!all).then_some(ids.as_slice());
            let returned = parked::unpark(&mut conn, chosen).await?;
            if returned == 0 {
                anyhow::bail!("no such parked row (`shop outbox parked` lists them)");
            }
            writeln!(out, "returned {returned} parked row(s) to the relay")?;
            Ok(())
        }
    }
}
