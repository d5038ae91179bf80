//! The inventory's side of the saga.
//!
//! - `order.created` → reserve every item or none; publish `inventory.reserved` or
//!   `inventory.reservation_failed` (with the shortages).
//! - `order.cancelled` → release what was reserved (`inventory.released`); if the
//!   cancellation comes first, leave a tombstone so the late `order.created` reserves nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use shop_proto::inventory::v1::{
    ReservedItem, Shortage, StockReleased, StockReservationFailed, StockReserved,
};
use shop_proto::order::v1::{OrderCancelled, OrderCreated};
use shop_shared::messaging::{
    BatchPrelude, BatchView, Handle, HandlerContext, HandlerError, Subscriptions,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Held;
use crate::repository;

const RESERVED: &str = "RESERVED";
const RELEASED: &str = "RELEASED";
// (A fourth status, CANCELLED, is the tombstone written by `insert_tombstone`.)

/// The handlers of every event the inventory consumes.
#[derive(Debug, Default)]
pub(crate) struct InventoryHandlers;

/// What the inventory subscribes to.
pub(crate) fn subscriptions() -> Subscriptions {
    let handlers = Arc::new(InventoryHandlers);
    Subscriptions::new()
        .on::<OrderCreated, _>(handlers.clone())
        .on::<OrderCancelled, _>(handlers.clone())
        .with_prelude(handlers)
}

/// Takes every stock row lock a batch will need, in one statement, in product order: the
/// products of its new orders and those held by the orders it cancels. Handlers then only
/// re-take locks their transaction already holds, so two batches (two consumer channels, or
/// two replicas) can only wait for one another, never deadlock.
#[async_trait::async_trait]
impl BatchPrelude for InventoryHandlers {
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<(), HandlerError> {
        let products: Vec<String> = batch
            .events::<OrderCreated>()
            .flat_map(|e| e.items.iter().map(|i| i.product_id.clone()))
            .collect();
        let cancelled: Vec<Uuid> = batch
            .events::<OrderCancelled>()
            .filter_map(|e| Uuid::parse_str(&e.order_id).ok())
            .collect();
        repository::lock_stock_for_batch(conn, &products, &cancelled).await?;
        Ok(())
    }
}

fn order_id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|_| HandlerError::permanent(format!("order_id {raw:?} is not a UUID")))
}

#[async_trait::async_trait]
impl Handle<OrderCreated> for InventoryHandlers {
    async fn handle(
        &self,
        e: &OrderCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = order_id(&e.order_id)?;

        // The units wanted per product, in product order (BTreeMap), which is also the order
        // the rows are locked in.
        let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
        for item in &e.items {
            if item.product_id.is_empty() || item.quantity <= 0 {
                return Err(HandlerError::permanent(format!(
                    "order {order_id} has an invalid item {:?} × {}",
                    item.product_id, item.quantity
                )));
            }
            *wanted.entry(item.product_id.clone()).or_default() += i64::from(item.quantity);
        }
        let held: Vec<Held> = wanted
            .iter()
            .map(|(p, &q)| Held {
                product_id: p.clone(),
                quantity: q,
            })
            .collect();

        // Claim the decision for this order first. A record already there means it was
        // decided before (a repeated order.created) or cancelled first (a tombstone): then
        // nothing is reserved. The claim holds the row until commit, so a concurrent
        // cancellation waits and then sees the outcome.
        if !repository::claim_reservation(cx.conn(), order_id, RESERVED, &held).await? {
            tracing::info!(%order_id, "order already decided or cancelled first: nothing reserved");
            return Ok(());
        }

        let products: Vec<String> = wanted.keys().cloned().collect();
        let stock: BTreeMap<String, i64> = repository::lock_stock(cx.conn(), &products)
            .await?
            .into_iter()
            .map(|row| (row.product_id, row.available))
            .collect();
        let shortages: Vec<Shortage> = wanted
            .iter()
            .filter_map(|(product, &quantity)| {
                let available = stock.get(product).copied().unwrap_or(0);
                (available < quantity).then(|| Shortage {
                    product_id: product.clone(),
                    requested: i32::try_from(quantity).unwrap_or(i32::MAX),
                    available,
                })
            })
            .collect();

        if shortages.is_empty() {
            // All or nothing: every line is available, so every line is reserved, in one
            // statement. The CHECK constraints would refuse a negative count regardless.
            let deltas: Vec<i64> = wanted.values().map(|q| -q).collect();
            repository::move_units(cx.conn(), &products, &deltas).await?;
            cx.stage(&StockReserved {
                order_id: e.order_id.clone(),
                items: held
                    .iter()
                    .map(|h| ReservedItem {
                        product_id: h.product_id.clone(),
                        quantity: i32::try_from(h.quantity).unwrap_or(i32::MAX),
                    })
                    .collect(),
            });
        } else {
            let names: Vec<&str> = shortages.iter().map(|s| s.product_id.as_str()).collect();
            let reason = format!("insufficient stock for {}", names.join(", "));
            repository::record_failure(cx.conn(), order_id).await?;
            cx.stage(&StockReservationFailed {
                order_id: e.order_id.clone(),
                reason,
                shortages,
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<OrderCancelled> for InventoryHandlers {
    async fn handle(
        &self,
        e: &OrderCancelled,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = order_id(&e.order_id)?;
        if repository::insert_tombstone(cx.conn(), order_id).await? {
            tracing::info!(%order_id, "cancellation arrived before the order: tombstone left");
            return Ok(());
        }
        let Some(reservation) = repository::lock_reservation(cx.conn(), order_id).await? else {
            return Err(HandlerError::transient("the reservation record vanished"));
        };
        // Only a reservation that holds units has anything to release; FAILED, RELEASED and
        // CANCELLED records make a repeated cancellation a no-op.
        if reservation.status == RESERVED {
            let mut held = reservation.items.0;
            held.sort_by(|a, b| a.product_id.cmp(&b.product_id));
            let products: Vec<String> = held.iter().map(|h| h.product_id.clone()).collect();
            let deltas: Vec<i64> = held.iter().map(|h| h.quantity).collect();
            repository::lock_stock(cx.conn(), &products).await?;
            repository::move_units(cx.conn(), &products, &deltas).await?;
            repository::set_reservation_status(cx.conn(), order_id, RELEASED).await?;
            cx.stage(&StockReleased {
                order_id: e.order_id.clone(),
            });
        }
        Ok(())
    }
}
