//! The gauges that need a query, sampled in the background at a fixed interval so a scrape
//! never waits on the database: the outbox (pending rows, the oldest one's age, parked rows),
//! the inbox size and the pool. Dead letters are sampled by the consumer, which holds the
//! broker connection (see `messaging::consumer`).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// The sampled state of a service's messaging tables.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
struct TableSample {
    pending: i64,
    oldest_age_s: f64,
    dead: i64,
    scheduled: i64,
    inbox: i64,
}

/// One query for every table gauge. The pending rows and the oldest of them come from the
/// `outbox_pending` partial index (a scheduled row counts once it is due, and its age from
/// then: the oldest one's age is also `shop_outbox_overdue_seconds`), the parked ones from
/// `outbox_dead`, the scheduled ones not yet due from `outbox_scheduled`; the inbox size is
/// PostgreSQL's live-row estimate (the inbox is never purged: counting it would scan it).
const SAMPLE: &str = "\
    SELECT \
      (SELECT count(*) FROM outbox WHERE published_at IS NULL AND NOT dead \
                AND (due_at IS NULL OR due_at <= now())) AS pending, \
      coalesce((SELECT extract(epoch FROM now() - coalesce(due_at, created_at))::float8 \
                FROM outbox WHERE published_at IS NULL AND NOT dead \
                AND (due_at IS NULL OR due_at <= now()) ORDER BY id LIMIT 1), 0) AS oldest_age_s, \
      (SELECT count(*) FROM outbox WHERE dead) AS dead, \
      (SELECT count(*) FROM outbox WHERE due_at > now() AND published_at IS NULL) AS scheduled, \
      coalesce((SELECT n_live_tup FROM pg_stat_user_tables \
                WHERE relname = 'inbox' AND schemaname = current_schema()), 0) AS inbox";

/// Samples once now, then every `every`, until `shutdown`. A failed sample (the database
/// away) keeps the last values; it is logged at DEBUG only, the service reports the outage
/// itself.
pub async fn run(metrics: Metrics, pool: PgPool, every: Duration, shutdown: CancellationToken) {
    loop {
        sample(&metrics, &pool).await;
        metrics.upkeep();
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Takes one sample of the tables and the pool.
pub async fn sample(metrics: &Metrics, pool: &PgPool) {
    let size = pool.size() as usize;
    let idle = pool.num_idle();
    metrics.pool_sampled(
        idle,
        size.saturating_sub(idle),
        pool.options().get_max_connections(),
    );
    match sqlx::query_as::<_, TableSample>(SAMPLE)
        .fetch_one(pool)
        .await
    {
        Ok(s) => {
            metrics.outbox_sampled(
                s.pending,
                Duration::try_from_secs_f64(s.oldest_age_s.max(0.0)).unwrap_or_default(),
                s.dead,
            );
            metrics.schedule_sampled(s.scheduled);
            metrics.inbox_sampled(s.inbox);
        }
        Err(e) => tracing::debug!(error = %e, "metrics sample of the outbox failed"),
    }
}
