//! The inventory's side of the saga, as handlers: parse the event, decide with
//! [`shop_saga::inventory`], stage the answer.
//!
//! - `order.created` → reserve every item or none; publish `inventory.reserved` or
//!   `inventory.reservation_failed` (with the shortages).
//! - `order.cancelled` → release what was reserved (`inventory.released`); if the
//!   cancellation comes first, leave a tombstone so the late `order.created` reserves nothing.
//!
//! A batch of deliveries shares one [`Stock`] (see [`BatchState`]): it loads, locked, the
//! reservation records of every order the batch names and the stock rows they and the new
//! orders touch; each handler decides on it in delivery order; its changes are written in a
//! few statements before the commit. So a batch has exactly the effects of its messages
//! applied one at a time (docs/contract.md, "Batches are invisible"). The CHECK constraints on
//! `stock` still refuse any negative count, whatever the code does.
//!
//! Lock order, the same in every transaction that takes more than one of these locks, so two
//! replicas applying batches at the same time wait for each other and never deadlock: inbox
//! rows (sorted by message id), one advisory lock per order the batch names (sorted by key),
//! the existing reservation records, then the stock rows (by product id). The per-order lock
//! makes two batches about one new order take turns; should a record still appear that the
//! load did not see, the insert finds the conflict and the batch is rolled back and applied
//! again, message by message, on fresh rows. The saga simulation runs two replicas at once and
//! counts PostgreSQL's deadlocks: none (docs/saga-check.md). (Before this, the prelude inserted
//! the batch's new records before it locked stock rows, and a cancellation's tombstone was
//! inserted after them: a batch holding a stock row could wait on another's new record while
//! that one waited on the stock row.)

use std::collections::BTreeSet;
use std::sync::Arc;

use shop_proto::inventory::v1::{
    ReservedItem, Shortage, StockReleased, StockReservationFailed, StockReserved,
};
use shop_proto::order::v1::{OrderCancelled, OrderCreated};
use shop_saga::inventory::{Ledger, Release, Reserve, Wanted};
use shop_shared::ids::OrderId;
use shop_shared::messaging::{
    BatchState, BatchView, Handle, HandlerContext, HandlerError, Subscriptions, event_id,
};
use sqlx::PgConnection;

use crate::repository;

/// The handlers of every event the inventory consumes.
#[derive(Debug, Default)]
pub(crate) struct InventoryHandlers;

/// What the inventory subscribes to.
pub(crate) fn subscriptions() -> Subscriptions {
    let handlers = Arc::new(InventoryHandlers);
    Subscriptions::with_state::<Stock>()
        .on::<OrderCreated, _>(handlers.clone())
        .on::<OrderCancelled, _>(handlers)
        .into()
}

fn wanted(e: &OrderCreated) -> Result<Wanted, HandlerError> {
    Wanted::from_lines(
        &e.order_id,
        e.items
            .iter()
            .map(|i| (i.product_id.as_str(), i64::from(i.quantity))),
    )
    .map_err(HandlerError::permanent)
}

fn units(quantity: i64) -> i32 {
    i32::try_from(quantity).unwrap_or(i32::MAX)
}

/// The rows one batch decides on: a [`Ledger`] over them.
#[derive(Debug)]
pub(crate) struct Stock(Ledger);

#[async_trait::async_trait]
impl BatchState for Stock {
    async fn load(conn: &mut PgConnection, batch: &BatchView<'_>) -> Result<Self, HandlerError> {
        let mut orders = BTreeSet::new();
        let mut products = BTreeSet::new();
        for e in batch.events::<OrderCreated>() {
            // Invalid orders are left to their handler, which dead-letters them.
            if let (Ok(id), Ok(wanted)) = (event_id::<OrderId>(&e.order_id), wanted(e)) {
                orders.insert(id);
                products.extend(wanted.products().map(str::to_owned));
            }
        }
        orders.extend(
            batch
                .events::<OrderCancelled>()
                .filter_map(|e| event_id::<OrderId>(&e.order_id).ok()),
        );
        let orders: Vec<OrderId> = orders.into_iter().collect();
        let reservations = repository::lock_reservations(conn, &orders).await?;
        for (_, record) in &reservations {
            products.extend(record.items.iter().map(|(p, _)| p.clone()));
        }
        let products: Vec<String> = products.into_iter().collect();
        let stock = repository::lock_stock(conn, &products).await?;
        Ok(Self(Ledger::new(stock, reservations)))
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let changes = self.0.changes();
        if !changes.inserted.is_empty() {
            let inserted = repository::insert_reservations(conn, &changes.inserted).await?;
            if inserted < changes.inserted.len() {
                return Err(HandlerError::transient(
                    "another transaction decided one of the batch's orders first",
                ));
            }
        }
        if !changes.updated.is_empty() {
            repository::update_reservations(conn, &changes.updated).await?;
        }
        if !changes.stock.is_empty() {
            repository::move_units(conn, &changes.stock).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<OrderCreated, Stock> for InventoryHandlers {
    async fn handle(
        &self,
        e: &OrderCreated,
        cx: &mut HandlerContext<'_, Stock>,
    ) -> Result<(), HandlerError> {
        let id: OrderId = event_id(&e.order_id)?;
        let wanted = wanted(e)?;
        // The saga's ledger keys orders by their UUID (it is pure: no service types).
        match cx.state().0.order_created(id.as_uuid(), &wanted) {
            Reserve::Reserved(items) => {
                cx.stage(&StockReserved {
                    order_id: e.order_id.clone(),
                    items: items
                        .into_iter()
                        .map(|(product_id, quantity)| ReservedItem {
                            product_id,
                            quantity: units(quantity),
                        })
                        .collect(),
                });
            }
            Reserve::Failed(shortages) => {
                let names: Vec<&str> = shortages.iter().map(|s| s.product_id.as_str()).collect();
                let reason = format!("insufficient stock for {}", names.join(", "));
                cx.stage(&StockReservationFailed {
                    order_id: e.order_id.clone(),
                    reason,
                    shortages: shortages
                        .into_iter()
                        .map(|s| Shortage {
                            product_id: s.product_id,
                            requested: units(s.requested),
                            available: s.available,
                        })
                        .collect(),
                });
            }
            Reserve::AlreadyDecided(status) => {
                tracing::info!(order_id = %id, status = status.as_str(), "order already decided: nothing reserved");
            }
            Reserve::CancelledFirst => {
                tracing::info!(order_id = %id, "order cancelled before it arrived: nothing reserved");
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<OrderCancelled, Stock> for InventoryHandlers {
    async fn handle(
        &self,
        e: &OrderCancelled,
        cx: &mut HandlerContext<'_, Stock>,
    ) -> Result<(), HandlerError> {
        let id: OrderId = event_id(&e.order_id)?;
        match cx.state().0.order_cancelled(id.as_uuid()) {
            Release::Released(_) => {
                cx.stage(&StockReleased {
                    order_id: e.order_id.clone(),
                });
            }
            Release::Tombstone => {
                tracing::info!(order_id = %id, "cancellation arrived before the order: tombstone left");
            }
            // FAILED, RELEASED and CANCELLED records hold nothing: a repeated cancellation is
            // a no-op.
            Release::NothingHeld(_) => {}
        }
        Ok(())
    }
}
