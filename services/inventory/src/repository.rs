//! The inventory service's SQL, checked at compile time against `migrations/inventory`.

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::domain::Held;

/// A product's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StockRow {
    pub(crate) product_id: String,
    pub(crate) available: i64,
    pub(crate) reserved: i64,
}

/// An order's reservation record.
#[derive(Debug, Clone)]
pub(crate) struct ReservationRow {
    pub(crate) status: String,
    pub(crate) items: Json<Vec<Held>>,
}

/// Adds `delta` to a product's available units, if the product exists. A result below zero
/// violates the CHECK constraint (SQLSTATE 23514) and changes nothing.
pub(crate) async fn adjust_existing(
    conn: &mut PgConnection,
    product_id: &str,
    delta: i64,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        "UPDATE stock SET available = available + $2, updated_at = now() \
         WHERE product_id = $1 RETURNING product_id, available, reserved",
        product_id,
        delta
    )
    .fetch_optional(conn)
    .await
}

/// Creates a product with `units` available (positive), or adds them if another request
/// created it in the meantime.
pub(crate) async fn insert_product(
    conn: &mut PgConnection,
    product_id: &str,
    units: i64,
) -> Result<StockRow, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        "INSERT INTO stock (product_id, available, reserved) VALUES ($1, $2, 0) \
         ON CONFLICT (product_id) DO UPDATE \
         SET available = stock.available + EXCLUDED.available, updated_at = now() \
         RETURNING product_id, available, reserved",
        product_id,
        units
    )
    .fetch_one(conn)
    .await
}

/// One product's stock.
pub(crate) async fn find_stock(
    conn: &mut PgConnection,
    product_id: &str,
) -> Result<Option<StockRow>, sqlx::Error> {
    sqlx::query_as!(
        StockRow,
        "SELECT product_id, available, reserved FROM stock WHERE product_id = $1",
        product_id
    )
    .fetch_optional(conn)
    .await
}

/// Locks, in product order and in one statement, the stock rows of `product_ids` and of the
/// products held by the reservations of `cancelled_orders`; returns their availability.
pub(crate) async fn lock_stock_for_batch(
    conn: &mut PgConnection,
    product_ids: &[String],
    cancelled_orders: &[Uuid],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT product_id, available FROM stock \
         WHERE product_id = ANY($1) \
            OR product_id IN (SELECT held->>'product_id' \
                              FROM reservations, jsonb_array_elements(items) AS held \
                              WHERE order_id = ANY($2)) \
         ORDER BY product_id FOR UPDATE",
        product_ids,
        cancelled_orders
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.product_id, r.available))
        .collect())
}

/// Moves units between available and reserved for several products in one statement:
/// `available += available_delta[i]`, `reserved -= available_delta[i]`. The CHECK
/// constraints reject any result below zero.
pub(crate) async fn move_units(
    conn: &mut PgConnection,
    product_ids: &[String],
    available_deltas: &[i64],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE stock AS s \
         SET available = s.available + v.delta, reserved = s.reserved - v.delta, updated_at = now() \
         FROM unnest($1::text[], $2::bigint[]) AS v(product_id, delta) \
         WHERE s.product_id = v.product_id",
        product_ids,
        available_deltas
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// An order's reservation record, locked.
pub(crate) async fn lock_reservation(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<ReservationRow>, sqlx::Error> {
    sqlx::query_as!(
        ReservationRow,
        r#"SELECT status, items AS "items: Json<Vec<Held>>" FROM reservations
           WHERE order_id = $1 FOR UPDATE"#,
        order_id
    )
    .fetch_optional(conn)
    .await
}

/// Claims the reservation decision of each order, recording `status` and the units it
/// wants, in one statement. Returns the orders claimed: an order that already has a record
/// (decided before, or a tombstone) is not.
pub(crate) async fn claim_reservations(
    conn: &mut PgConnection,
    status: &str,
    claims: &[(Uuid, Vec<Held>)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = claims.iter().map(|(id, _)| *id).collect();
    let items: Vec<serde_json::Value> = claims
        .iter()
        .map(|(_, held)| serde_json::to_value(held).unwrap_or_default())
        .collect();
    sqlx::query_scalar!(
        "INSERT INTO reservations (order_id, status, items) \
         SELECT id, $2, item FROM unnest($1::uuid[], $3::jsonb[]) AS c(id, item) \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        &ids,
        status,
        &items
    )
    .fetch_all(conn)
    .await
}

/// Sets the status of several reservations (and empties what they hold when `clear_items`).
pub(crate) async fn set_reservations_status(
    conn: &mut PgConnection,
    orders: &[Uuid],
    status: &str,
    clear_items: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE reservations SET status = $2, \
                items = CASE WHEN $3 THEN '[]'::jsonb ELSE items END, updated_at = now() \
         WHERE order_id = ANY($1)",
        orders,
        status,
        clear_items
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Leaves a tombstone for an order cancelled before its `order.created` arrived. Returns
/// false when the order already has a record.
pub(crate) async fn insert_tombstone(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        "INSERT INTO reservations (order_id, status) VALUES ($1, 'CANCELLED') \
         ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
        order_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(inserted.is_some())
}
