//! Scheduled purges of the tables that grow with traffic, so that no table grows without bound
//! (docs/contract.md, "Bounds"). A service lists its purges ([`Purge`]: a table, its retention
//! setting, one bounded DELETE); [`run`] runs them every `PURGE_INTERVAL_S` beside the HTTP
//! port. Each DELETE removes at most [`PURGE_CHUNK`] rows past their retention, repeated until
//! fewer are left, so a large backlog never holds one long transaction; replicas purging at
//! once only delete the same rows twice (the second finds none).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The most rows one purge statement deletes.
pub const PURGE_CHUNK: i64 = 10_000;

/// One bounded DELETE: given the pool and [`PURGE_CHUNK`], the rows it deleted.
type PurgeStatement =
    Arc<dyn Fn(PgPool, i64) -> BoxFuture<'static, Result<u64, sqlx::Error>> + Send + Sync>;

/// A table's purge: the rows past its retention, deleted on the schedule.
#[derive(Clone)]
pub struct Purge {
    /// The table, for logs.
    pub table: &'static str,
    statement: PurgeStatement,
}

impl std::fmt::Debug for Purge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purge").field("table", &self.table).finish()
    }
}

impl Purge {
    /// A purge of `table` by `statement`, which deletes at most the given number of rows past
    /// the table's retention and returns how many it deleted.
    pub fn new<F>(table: &'static str, statement: F) -> Self
    where
        F: Fn(PgPool, i64) -> BoxFuture<'static, Result<u64, sqlx::Error>> + Send + Sync + 'static,
    {
        Self {
            table,
            statement: Arc::new(statement),
        }
    }

    /// Deletes every row past the retention, a chunk at a time; the rows deleted.
    pub async fn once(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        let mut total = 0;
        loop {
            let deleted = (self.statement)(pool.clone(), PURGE_CHUNK).await?;
            total += deleted;
            if deleted < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// The inbox's purge: ids of messages applied longer ago than `retention`
    /// (`INBOX_RETENTION_S`).
    pub fn inbox(retention: Duration) -> Self {
        let secs = retention.as_secs_f64();
        Self::new("inbox", move |pool, chunk| {
            Box::pin(async move {
                let done = sqlx::query(
                    "DELETE FROM inbox WHERE ctid IN ( \
                         SELECT ctid FROM inbox \
                         WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
                )
                .bind(secs)
                .bind(chunk)
                .execute(&pool)
                .await?;
                Ok(done.rows_affected())
            })
        })
    }
}

/// Runs `purges` every `interval` until `shutdown`, logging what each deleted. A failed purge
/// is logged and tried again at the next interval.
pub async fn run(
    service: &'static str,
    pool: PgPool,
    purges: Vec<Purge>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if purges.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        for purge in &purges {
            match purge.once(&pool).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(
                    service,
                    table = purge.table,
                    rows,
                    "purged rows past their retention"
                ),
                Err(e) => {
                    tracing::warn!(service, table = purge.table, error = %e, "the purge failed; trying again later")
                }
            }
        }
    }
}
