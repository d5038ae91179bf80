//! The invariants after a run, read from the services' own databases and the broker:
//! every order terminal, stock arithmetic exact, every event consumed once, no dead letters,
//! the outbox empty.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shop_shared::messaging::connection;

use super::setup::Target;

/// What the check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Consistency {
    /// Orders of the run still PENDING after the deadline.
    pub pending: i64,
    /// Orders of the run CONFIRMED.
    pub confirmed: i64,
    /// Orders of the run REJECTED.
    pub rejected: i64,
    /// Outbox rows not yet published, over the four databases.
    pub outbox_unpublished: i64,
    /// Messages in the three dead-letter queues.
    pub dead_letters: u64,
    /// Every violated invariant, in words.
    pub problems: Vec<String>,
}

impl Consistency {
    /// Whether every invariant holds.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Waits (up to `deadline`) for the run's orders to settle and the outboxes to drain, then
/// checks every invariant for the orders in `order_ids` and the products in `stock`.
pub async fn check(
    target: &Target,
    order_ids: &[String],
    stock: &BTreeMap<String, i64>,
    deadline: Duration,
) -> anyhow::Result<Consistency> {
    let ids: Vec<uuid::Uuid> = order_ids.iter().filter_map(|id| id.parse().ok()).collect();
    let until = Instant::now() + deadline;
    let mut c = Consistency::default();
    loop {
        c.pending = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status = 'PENDING'",
        )
        .bind(&ids)
        .fetch_one(&target.pools.order)
        .await?;
        c.outbox_unpublished = 0;
        for pool in target.pools.all() {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(pool)
                    .await?;
            c.outbox_unpublished += n;
        }
        // The last hop (order.confirmed → notification) has no outbox row: wait for it too.
        let notified: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT order_id) FROM notifications WHERE order_id = ANY($1)",
        )
        .bind(order_ids)
        .fetch_one(&target.pools.notification)
        .await?;
        let settled = c.pending == 0 && c.outbox_unpublished == 0 && notified as usize >= ids.len();
        if settled || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM orders WHERE order_id = ANY($1) GROUP BY status",
    )
    .bind(&ids)
    .fetch_all(&target.pools.order)
    .await?;
    for (status, n) in counts {
        match status.as_str() {
            "CONFIRMED" => c.confirmed = n,
            "REJECTED" => c.rejected = n,
            _ => {}
        }
    }
    if c.pending > 0 {
        c.problems
            .push(format!("{} orders still PENDING", c.pending));
    }
    let found = c.confirmed + c.rejected + c.pending;
    if found != ids.len() as i64 {
        c.problems
            .push(format!("{} orders accepted, {found} found", ids.len()));
    }
    if c.outbox_unpublished > 0 {
        c.problems
            .push(format!("{} outbox rows unpublished", c.outbox_unpublished));
    }

    // Stock arithmetic: reserved = Σ quantities of confirmed orders; available + reserved =
    // what was put in.
    let products: Vec<String> = stock.keys().cloned().collect();
    let reserved_by_orders: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT item->>'product_id', sum((item->>'quantity')::bigint)::bigint \
         FROM orders, jsonb_array_elements(items) AS item \
         WHERE order_id = ANY($1) AND status = 'CONFIRMED' GROUP BY 1",
    )
    .bind(&ids)
    .fetch_all(&target.pools.order)
    .await?
    .into_iter()
    .collect();
    let levels: BTreeMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT product_id, available, reserved FROM stock WHERE product_id = ANY($1)",
    )
    .bind(&products)
    .fetch_all(&target.pools.inventory)
    .await?
    .into_iter()
    .map(|(p, a, r)| (p, (a, r)))
    .collect();
    for (product, put_in) in stock {
        let (available, reserved) = levels.get(product).copied().unwrap_or((0, 0));
        let expected = reserved_by_orders.get(product).copied().unwrap_or(0);
        if reserved != expected || available + reserved != *put_in {
            c.problems.push(format!(
                "{product}: available {available} + reserved {reserved} (expected {expected} reserved of {put_in})"
            ));
        }
    }

    // Every event consumed once: one reservation decision per order, one notification per
    // terminal order, none twice.
    let decided: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE order_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&target.pools.inventory)
            .await?;
    if decided != ids.len() as i64 {
        c.problems.push(format!(
            "{decided} reservation decisions for {} orders",
            ids.len()
        ));
    }
    let notes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT order_id, count(*) FROM notifications WHERE order_id = ANY($1) GROUP BY order_id",
    )
    .bind(order_ids)
    .fetch_all(&target.pools.notification)
    .await?;
    let doubled = notes.iter().filter(|(_, n)| *n > 1).count();
    if doubled > 0 {
        c.problems
            .push(format!("{doubled} orders notified more than once"));
    }
    if (notes.len() as i64) != c.confirmed + c.rejected {
        c.problems.push(format!(
            "{} orders notified, {} terminal",
            notes.len(),
            c.confirmed + c.rejected
        ));
    }

    // No dead letters.
    let conn = connection::connect(
        &target.amqp_url,
        &target.names.connection_name("bench", "check"),
    )
    .await?;
    let channel = conn.create_channel().await?;
    for service in ["order", "inventory", "notification"] {
        let dlq = target.names.dlq(service);
        if let Ok(queue) = channel
            .queue_declare(
                &dlq,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            c.dead_letters += u64::from(queue.message_count());
        }
    }
    let _ = conn.close(200, "checked").await;
    if c.dead_letters > 0 {
        c.problems.push(format!("{} dead letters", c.dead_letters));
    }
    Ok(c)
}
