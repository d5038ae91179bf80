//! The inventory service's SQL, checked at compile time against `migrations/inventory`.

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use shop_saga::inventory::{Reservation, ReservationStatus, Stock};
use shop_shared::ids::OrderId;

use crate::domain::{Held, ProductId};

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StockRow {
    pub(crate) product_id: ProductId,
    pub(crate) available: i64,
    pub(crate) reserved: i64,
}

/// Adds `delta` to a product's available units, if the product exists. A result below zero
/// violates the CHECK constraint (SQLSTATE 23514) and changes nothing.
pub(crate) async fn adjust_existing(
    conn: &mut PgConnection,
    product_id: &ProductId,
    delta: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        r#"UPDATE stock SET available = available + $2, updated_at = now()
           WHERE product_id = $1
           RETURNING product_id AS "product_id: ProductId", available, reserved"#,
        product_id.as_str(),
        delta
    )
    .fetch_optional(conn)
    .await
}

/// Creates a product with `units` available (positive), or adds them if another request
/// created it in the meantime.
pub(crate) async fn insert_product(
    conn: &mut PgConnection,
    product_id: &ProductId,
    units: i64,
) -> Result<StockRow, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        r#"INSERT INTO stock (product_id, available, reserved) VALUES ($1, $2, 0)
           ON CONFLICT (product_id) DO UPDATE
           SET available = stock.available + EXCLUDED.available, updated_at = now()
           RETURNING product_id AS "product_id: ProductId", available, reserved"#,
        product_id.as_str(),
        units
    )
    .fetch_one(conn)
    .await
}

/// One product's stock.
pub(crate) async fn find_stock(
    conn: &mut PgConnection,
    product_id: &ProductId,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        r#"SELECT product_id AS "product_id: ProductId", available, reserved
           FROM stock WHERE product_id = $1"#,
        product_id.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// Locks the stock rows of `product_ids` (sorted), in product order and in one statement;
/// returns their figures. A product with no row does not exist.
pub(crate) async fn lock_stock(
    conn: &mut PgConnection,
    product_ids: &[String],
) -> Result<Vec<(String, Stock)>, sqlx::Error> {
    if product_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as!(
        StockRow,
        r#"SELECT product_id AS "product_id: ProductId", available, reserved
           FROM stock WHERE product_id = ANY($1) ORDER BY product_id FOR UPDATE"#,
        product_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stock = Stock {
                available: r.available,
                reserved: r.reserved,
            };
            (r.product_id.into(), stock)
        })
        .collect())
}

/// Moves units between available and reserved for several products in one statement:
/// `available += delta`, `reserved -= delta`. The CHECK constraints reject any result below
/// zero.
pub(crate) async fn move_units(
    conn: &mut PgConnection,
    deltas: &[(String, i64)],
) -> Result<u64, sqlx::Error> {
    let (products, deltas): (Vec<String>, Vec<i64>) = deltas.iter().cloned().unzip();
    let done = sqlx::query!(
        "UPDATE stock AS s \
         SET available = s.available + v.delta, reserved = s.reserved - v.delta, updated_at = now() \
         FROM unnest($1::text[], $2::bigint[]) AS v(product_id, delta) \
         WHERE s.product_id = v.product_id",
        &products,
        &deltas
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Takes the batch's lock on each of `orders` (sorted), in order, then reads (and locks)
/// their reservation records; returns those that exist, keyed as the saga's ledger keys them.
///
/// The per-order lock is a transaction-level advisory lock keyed by the order id: unlike a row
/// lock it exists before the order's record does, so two transactions deciding about the same
/// new order (its `order.created` on one replica, its `order.cancelled` on another) take turns,
/// and the second reads what the first committed instead of deciding on a stale view.
pub(crate) async fn lock_reservations(
    conn: &mut PgConnection,
    orders: &[OrderId],
) -> Result<Vec<(Uuid, Reservation)>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    // The keys in ascending order, and `unnest` takes them in array order: every transaction
    // takes these locks in one order, so they cannot deadlock on each other.
    let orders: Vec<Uuid> = orders.iter().map(|id| id.as_uuid()).collect();
    let mut keys: Vec<i64> = orders.iter().map(|id| order_lock_key(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
        &keys
    )
    .fetch_all(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"SELECT order_id, status AS "status: ReservationStatus",
                  items AS "items: Json<Vec<Held>>"
           FROM reservations WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE"#,
        &orders
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let items = r
                .items
                .0
                .into_iter()
                .map(|h| (h.product_id, h.quantity))
                .collect();
            let reservation = Reservation {
                status: r.status,
                items,
            };
            (r.order_id, reservation)
        })
        .collect())
}

/// The advisory lock key of an order: the low 64 bits of its id (random bits in a UUID v7).
fn order_lock_key(order_id: Uuid) -> i64 {
    order_id.as_u64_pair().1 as i64
}

fn columns(records: &[(Uuid, Reservation)]) -> (Vec<Uuid>, Vec<String>, Vec<serde_json::Value>) {
    let mut ids = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut items = Vec::with_capacity(records.len());
    for (id, record) in records {
        ids.push(*id);
        statuses.push(record.status.as_str().to_owned());
        let held: Vec<Held> = record
            .items
            .iter()
            .map(|(product_id, quantity)| Held {
                product_id: product_id.clone(),
                quantity: *quantity,
            })
            .collect();
        items.push(serde_json::to_value(held).unwrap_or_default());
    }
    (ids, statuses, items)
}

/// Inserts new reservation records (in order-id order); returns how many were inserted: one
/// that another transaction committed meanwhile is not.
pub(crate) async fn insert_reservations(
    conn: &mut PgConnection,
    records: &[(Uuid, Reservation)],
) -> Result<usize, sqlx::Error> {
    let (ids, statuses, items) = columns(records);
    let inserted = sqlx::query_scalar!(
        "INSERT INTO reservations (order_id, status, items) \
         SELECT id, status, item FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) \
                AS c(id, status, item) ORDER BY id \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        &ids,
        &statuses,
        &items
    )
    .fetch_all(conn)
    .await?;
    Ok(inserted.len())
}

/// Updates existing (locked) reservation records.
pub(crate) async fn update_reservations(
    conn: &mut PgConnection,
    records: &[(Uuid, Reservation)],
) -> Result<(), sqlx::Error> {
    let (ids, statuses, items) = columns(records);
    sqlx::query!(
        "UPDATE reservations AS r SET status = c.status, items = c.item, updated_at = now() \
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS c(id, status, item) \
         WHERE r.order_id = c.id",
        &ids,
        &statuses,
        &items
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes at most `chunk` settled reservation records (FAILED, RELEASED) last changed longer
/// ago than `retention`. RESERVED records hold units and CANCELLED ones keep a late
/// `order.created` from reserving: those stay. The statuses are written as literals, not bound:
/// only then can the planner use the partial index `reservations_settled`, which holds these.
pub(crate) async fn purge_settled_reservations(
    pool: &sqlx::PgPool,
    retention: std::time::Duration,
    chunk: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM reservations WHERE order_id IN ( \
             SELECT order_id FROM reservations \
             WHERE status IN ('FAILED', 'RELEASED') \
               AND updated_at < now() - make_interval(secs => $1) \
             LIMIT $2)",
        retention.as_secs_f64(),
        chunk,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
