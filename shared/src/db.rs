//! PostgreSQL for a service: create its database when missing, connect a pool, and run its
//! migrations together with the messaging tables (outbox, inbox) every service shares.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, Postgres, Transaction};

/// The outbox and inbox tables, from `migrations/messaging/`.
pub static MESSAGING_MIGRATOR: Migrator = sqlx::migrate!("../migrations/messaging");

/// Creates the database named in `url` if it does not exist, by connecting to the server's
/// `postgres` database.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options: PgConnectOptions = url.parse()?;
    let database = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("the database URL names no database: {url}"))?
        .to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&create).execute(&mut admin).await {
            // Another process may have created it in between (42P04 duplicate_database).
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04");
            if !duplicate {
                return Err(e.into());
            }
        }
    }
    admin.close().await?;
    Ok(())
}

/// Whether a database error is worth retrying as it is: the connection was lost or killed,
/// the pool had nothing to give in time, or the server asked to try again (serialization
/// failure, deadlock, shutting down, too many connections). A command that meets one answers
/// UNAVAILABLE, not INTERNAL: the caller may safely retry (CreateOrder with the same
/// idempotency key).
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // Class 08: connection exception; 57P0x: the server is shutting down or was told
            // to end this backend; 53300: too many connections; 40001/40P01: try again.
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}

/// How long a pooled connection may have sat idle and still be handed out without a ping.
///
/// sqlx pings every idle connection before handing it out (a round trip to the server), and
/// again when it comes back: at an everyday rate that is one more round trip on the path of
/// every transaction. A connection that was in use this recently is handed out as it is (were
/// it dropped meanwhile, its first statement fails as it would have a moment after a ping); one
/// idle for longer, the kind a server restart during a quiet spell leaves behind, is pinged
/// first and replaced if it does not answer.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects a pool of at most `max_connections` to `url`.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A pooled connection kept by a loop whose transactions run one after another (a consumer
/// channel's batches) while it is busy, instead of one taken from the pool per transaction.
///
/// sqlx pings every connection that comes back to the pool (a round trip, from a task of its
/// own) before another caller may have it: a busy loop that keeps its connection saves that
/// and the hand-over per transaction. The loop gives it back ([`KeptConnection::release`]) when
/// it has nothing to do, so an idle service holds none; a failure on it ends the loop's session,
/// which drops this (the pool then finds a broken connection out on its return).
#[derive(Debug)]
pub struct KeptConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl KeptConnection {
    /// Keeps nothing yet; the first transaction takes a connection from `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None }
    }

    /// Begins a transaction on the kept connection, taking one from the pool first if none is
    /// kept.
    pub async fn begin(&mut self) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        self.conn.insert(conn).begin().await
    }

    /// Whether a connection is kept.
    pub fn is_kept(&self) -> bool {
        self.conn.is_some()
    }

    /// Gives the kept connection back to the pool.
    pub fn release(&mut self) {
        self.conn = None;
    }
}

/// Runs the messaging migrations and `service`'s migrations as one migrator, so the
/// database's `_sqlx_migrations` table knows every version that was applied.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> anyhow::Result<()> {
    let mut migrations: Vec<_> = MESSAGING_MIGRATOR
        .iter()
        .chain(service.iter())
        .cloned()
        .collect();
    migrations.sort_by_key(|m| m.version);
    let merged = Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true, // replicas starting together take turns
        no_tx: false,
    };
    merged.run(pool).await?;
    Ok(())
}
