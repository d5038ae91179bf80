//! `shop schedule`: the messages a service's outbox holds for a later time (each PENDING
//! order's reservation deadline, in the order service), for operators.
//!
//! - `shop schedule list` shows them, soonest first: when each is due, its key, its type.
//! - `shop schedule show <message-id>` shows one with its body decoded.
//! - `shop schedule cancel <key>` cancels one before it is due, as the service would (a
//!   no-op, said so, once it was published).
//!
//! They read `<SERVICE>_DATABASE_URL` (`--service`, default `order`) like the service; the URL
//! is shown with its password masked.

use std::io::Write;

use anyhow::Context as _;
use serde_json::json;
use shop_shared::messaging::schedule::{self, Scheduled};
use sqlx::PgPool;

use crate::cmd::inspect::decoded::{self, Decoder};
use crate::system::ServiceName;

/// The most messages `list` shows.
const LIST_LIMIT: i64 = 1_000;

/// `shop schedule …`.
#[derive(Debug, clap::Parser)]
#[command(name = "shop schedule")]
pub struct ScheduleArgs {
    /// Whose outbox (its `<SERVICE>_DATABASE_URL` is read).
    #[arg(long, value_enum, default_value = "order", global = true)]
    service: ServiceName,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ScheduleCommand {
    /// The scheduled messages not yet published, soonest first (at most 1,000).
    List {
        /// One JSON object per message and line.
        #[arg(long)]
        json: bool,
    },
    /// One scheduled message, its body decoded.
    Show {
        /// Its message id (see `shop schedule list`).
        message_id: String,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Cancel the scheduled message with this key before it is due.
    Cancel {
        /// Its key (see `shop schedule list`), e.g. `order.reservation_deadline:<order id>`.
        key: String,
    },
}

/// Runs `shop schedule …`, printing to `out`.
pub async fn run(args: ScheduleArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let pool = crate::cmd::inspect::service_database(args.service).await?;
    let result = run_with(args, &pool, out).await;
    pool.close().await;
    result
}

/// Runs `shop schedule …` on the service database `pool` (its `--service` is not read).
pub async fn run_with(
    args: ScheduleArgs,
    pool: &PgPool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    match args.command {
        ScheduleCommand::List { json } => {
            let all = schedule::list(&mut conn, LIST_LIMIT)
                .await
                .context("cannot read the outbox (has the service started once?)")?;
            if all.is_empty() && !json {
                writeln!(out, "nothing is scheduled")?;
            }
            let now = chrono::Utc::now();
            for s in &all {
                if json {
                    writeln!(out, "{}", summary(s))?;
                } else {
                    let due = s.due_at.unwrap_or(now);
                    let when = if due > now {
                        format!("in {} s", (due - now).num_seconds())
                    } else {
                        format!("due {} s ago", (now - due).num_seconds())
                    };
                    writeln!(
                        out,
                        "{}  ({when})  {}  {}  {}",
                        decoded::rfc3339(due),
                        s.schedule_key.as_deref().unwrap_or("-"),
                        s.message_type,
                        s.message_id
                    )?;
                }
            }
            Ok(())
        }
        ScheduleCommand::Show { message_id, json } => {
            let id = uuid::Uuid::parse_str(&message_id).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a message id (a UUID; `shop schedule list` shows them)",
                    shop_shared::input::shown(&message_id)
                )
            })?;
            let all = schedule::list(&mut conn, i64::MAX)
                .await
                .context("cannot read the outbox (has the service started once?)")?;
            let Some(s) = all.into_iter().find(|s| s.message_id == id) else {
                anyhow::bail!(
                    "no scheduled message {id} (published or cancelled already? `shop schedule list` shows what is left)"
                );
            };
            let body = Decoder::new()?.body(Some(&s.message_type), &s.payload);
            let mut shown = summary(&s);
            shown["correlation_id"] = json!(s.correlation_id);
            shown["staged_at"] = json!(decoded::rfc3339(s.created_at));
            shown["body"] = body.json.clone();
            if let Some(error) = &body.error {
                shown["body_error"] = json!(error);
            }
            if json {
                writeln!(out, "{shown}")?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
            }
            Ok(())
        }
        ScheduleCommand::Cancel { key } => {
            let cancelled = schedule::cancel(&mut conn, std::slice::from_ref(&key)).await?;
            if cancelled == 0 {
                anyhow::bail!(
                    "nothing is scheduled under {} (published or cancelled already? `shop schedule list` shows the keys)",
                    shop_shared::input::shown(&key)
                );
            }
            writeln!(out, "cancelled {key}")?;
            Ok(())
        }
    }
}

/// What `list --json` prints for one message.
fn summary(s: &Scheduled) -> serde_json::Value {
    json!({
        "message_id": s.message_id.to_string(),
        "key": s.schedule_key,
        "type": s.message_type,
        "routing_key": s.routing_key,
        "due_at": s.due_at.map(decoded::rfc3339),
    })
}
