//! The inventory's side of the saga.
//!
//! - `order.created` → reserve every item or none; publish `inventory.reserved` or
//!   `inventory.reservation_failed` (with the shortages).
//! - `order.cancelled` → release what was reserved (`inventory.released`); if the
//!   cancellation comes first, leave a tombstone so the late `order.created` reserves nothing.
//!
//! Reservations are decided a batch at a time (see [`BatchPrelude`]): the batch's prelude
//! claims the decision for every new order in one INSERT (an order already decided, or
//! cancelled first, is not claimed), locks every stock row the batch touches in one
//! statement **in product order**, and loads their availability. The handlers then decide
//! each order all-or-nothing against those locked figures, in delivery order, in memory, and
//! the batch's end writes the net stock change of every product in one UPDATE. The CHECK
//! constraints on `stock` still refuse any negative count, whatever the code does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use shop_proto::inventory::v1::{
    ReservedItem, Shortage, StockReleased, StockReservationFailed, StockReserved,
};
use shop_proto::order::v1::{OrderCancelled, OrderCreated};
use shop_shared::messaging::{
    BatchPrelude, BatchState, BatchView, Handle, HandlerContext, HandlerError, Subscriptions,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Held;
use crate::repository;

const RESERVED: &str = "RESERVED";

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

fn order_id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|_| HandlerError::permanent(format!("order_id {raw:?} is not a UUID")))
}

/// The units an order wants per product (product order), or why it is invalid.
fn wanted(e: &OrderCreated) -> Result<BTreeMap<String, i64>, String> {
    let mut wanted = BTreeMap::new();
    for item in &e.items {
        if item.product_id.is_empty() || item.quantity <= 0 {
            return Err(format!(
                "order {} has an invalid item {:?} × {}",
                e.order_id, item.product_id, item.quantity
            ));
        }
        *wanted.entry(item.product_id.clone()).or_default() += i64::from(item.quantity);
    }
    if wanted.is_empty() {
        return Err(format!("order {} has no items", e.order_id));
    }
    Ok(wanted)
}

/// What one batch's handlers share.
#[derive(Debug, Default)]
struct Batch {
    /// Available units of every locked product, as decided so far in this batch.
    available: HashMap<String, i64>,
    /// Net change of `available` per product (`reserved` changes by the opposite).
    deltas: BTreeMap<String, i64>,
    /// Orders whose decision this batch claimed.
    claimed: HashSet<Uuid>,
    /// Claimed orders whose reservation failed.
    failed: Vec<Uuid>,
    /// Reservations released by this batch.
    released: Vec<Uuid>,
}

#[async_trait::async_trait]
impl BatchPrelude for InventoryHandlers {
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<BatchState, HandlerError> {
        let mut claims: Vec<(Uuid, Vec<Held>)> = Vec::new();
        let mut products: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for e in batch.events::<OrderCreated>() {
            // Invalid orders are not claimed: their handler dead-letters them.
            let (Ok(id), Ok(wanted)) = (Uuid::parse_str(&e.order_id), wanted(e)) else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            products.extend(wanted.keys().cloned());
            let held = wanted
                .into_iter()
                .map(|(product_id, quantity)| Held {
                    product_id,
                    quantity,
                })
                .collect();
            claims.push((id, held));
        }
        let cancelled: Vec<Uuid> = batch
            .events::<OrderCancelled>()
            .filter_map(|e| Uuid::parse_str(&e.order_id).ok())
            .collect();

        // One INSERT claims every new order's decision (RESERVED with what it wants; a failed
        // one is corrected in `finish`). Orders decided before, or cancelled first, are not
        // claimed and reserve nothing.
        let claimed = repository::claim_reservations(conn, RESERVED, &claims).await?;
        // One SELECT … ORDER BY product_id FOR UPDATE locks every row the batch touches.
        let available = repository::lock_stock_for_batch(conn, &products, &cancelled)
            .await?
            .into_iter()
            .collect();
        Ok(Box::new(Batch {
            available,
            claimed: claimed.into_iter().collect(),
            ..Batch::default()
        }))
    }

    async fn finish(&self, conn: &mut PgConnection, state: BatchState) -> Result<(), HandlerError> {
        let batch = state
            .downcast::<Batch>()
            .map_err(|_| HandlerError::permanent("unexpected batch state"))?;
        let (products, deltas): (Vec<String>, Vec<i64>) =
            batch.deltas.into_iter().filter(|(_, d)| *d != 0).unzip();
        if !products.is_empty() {
            repository::move_units(conn, &products, &deltas).await?;
        }
        if !batch.failed.is_empty() {
            repository::set_reservations_status(conn, &batch.failed, "FAILED", true).await?;
        }
        if !batch.released.is_empty() {
            repository::set_reservations_status(conn, &batch.released, "RELEASED", false).await?;
        }
        Ok(())
    }
}

fn batch<'a>(cx: &'a mut HandlerContext<'_>) -> Result<&'a mut Batch, HandlerError> {
    cx.batch_state::<Batch>().ok_or_else(|| {
        HandlerError::permanent("the inventory handlers run inside their batch prelude")
    })
}

#[async_trait::async_trait]
impl Handle<OrderCreated> for InventoryHandlers {
    async fn handle(
        &self,
        e: &OrderCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = order_id(&e.order_id)?;
        let wanted = wanted(e).map_err(HandlerError::permanent)?;
        let state = batch(cx)?;
        if !state.claimed.remove(&order_id) {
            tracing::info!(%order_id, "order already decided or cancelled first: nothing reserved");
            return Ok(());
        }
        let shortages: Vec<Shortage> = wanted
            .iter()
            .filter_map(|(product, &quantity)| {
                let available = state.available.get(product).copied().unwrap_or(0);
                (available < quantity).then(|| Shortage {
                    product_id: product.clone(),
                    requested: i32::try_from(quantity).unwrap_or(i32::MAX),
                    available,
                })
            })
            .collect();

        if shortages.is_empty() {
            // All or nothing: every line is available, so every line is reserved.
            for (product, quantity) in &wanted {
                *state.available.entry(product.clone()).or_default() -= quantity;
                *state.deltas.entry(product.clone()).or_default() -= quantity;
            }
            cx.stage(&StockReserved {
                order_id: e.order_id.clone(),
                items: wanted
                    .iter()
                    .map(|(product_id, &quantity)| ReservedItem {
                        product_id: product_id.clone(),
                        quantity: i32::try_from(quantity).unwrap_or(i32::MAX),
                    })
                    .collect(),
            });
        } else {
            state.failed.push(order_id);
            let names: Vec<&str> = shortages.iter().map(|s| s.product_id.as_str()).collect();
            let reason = format!("insufficient stock for {}", names.join(", "));
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
        let state = batch(cx)?;
        // Only a reservation that holds units has anything to release: FAILED (also when it
        // failed earlier in this batch), RELEASED and CANCELLED records make a repeated
        // cancellation a no-op.
        if reservation.status != RESERVED
            || state.failed.contains(&order_id)
            || state.released.contains(&order_id)
        {
            return Ok(());
        }
        for held in &reservation.items.0 {
            if !state.available.contains_key(&held.product_id) {
                return Err(HandlerError::transient(format!(
                    "stock row {} was not locked by the batch",
                    held.product_id
                )));
            }
            *state.available.entry(held.product_id.clone()).or_default() += held.quantity;
            *state.deltas.entry(held.product_id.clone()).or_default() += held.quantity;
        }
        state.released.push(order_id);
        cx.stage(&StockReleased {
            order_id: e.order_id.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_proto::order::v1::LineItem;

    fn order(items: &[(&str, i32)]) -> OrderCreated {
        OrderCreated {
            order_id: Uuid::now_v7().to_string(),
            items: items
                .iter()
                .map(|(p, q)| LineItem {
                    product_id: (*p).into(),
                    quantity: *q,
                    unit_price_cents: 1,
                })
                .collect(),
            ..OrderCreated::default()
        }
    }

    #[test]
    fn wanted_units_are_summed_per_product_and_invalid_items_refused() {
        let w = wanted(&order(&[("b", 1), ("a", 2), ("b", 3)])).unwrap();
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            [("a".into(), 2), ("b".into(), 4)]
        );
        assert!(wanted(&order(&[("a", 0)])).is_err());
        assert!(wanted(&order(&[("", 1)])).is_err());
        assert!(wanted(&order(&[])).is_err());
    }
}
