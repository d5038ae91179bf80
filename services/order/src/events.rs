//! The order service's side of the saga: the events it consumes and the ones it publishes.
//!
//! - `user.created` / `user.updated` → the customer profile.
//! - `inventory.reserved` → PENDING becomes CONFIRMED, `order.confirmed`.
//! - `inventory.reservation_failed` → PENDING becomes REJECTED, `order.rejected`.
//!
//! An inventory answer for an order that is no longer PENDING (it was cancelled meanwhile, or
//! the answer is a duplicate) changes nothing (docs/contract.md, Order saga).
//!
//! The answers are applied a batch at a time (see [`BatchPrelude`]): the batch's prelude
//! settles every answered order that is still PENDING in one UPDATE, and each answer's handler
//! then only publishes what its order became. One statement per batch instead of one per
//! answer: the order consumer was the saga's bottleneck at full load.

use std::collections::HashMap;
use std::sync::Arc;

use shop_proto::inventory::v1::{StockReservationFailed, StockReserved};
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderCreated, OrderRejected};
use shop_proto::user::v1::{UserCreated, UserUpdated};
use shop_shared::messaging::{
    BatchPrelude, BatchState, BatchView, Handle, HandlerContext, HandlerError, Subscriptions,
};
use shop_shared::time::{now, timestamp};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Item, OrderStatus};
use crate::repository::{self, OrderRow};

/// The handlers of every event the order service consumes.
#[derive(Debug, Default)]
pub(crate) struct OrderHandlers;

/// What the order service subscribes to.
pub(crate) fn subscriptions() -> Subscriptions {
    let handlers = Arc::new(OrderHandlers);
    Subscriptions::new()
        .on::<UserCreated, _>(handlers.clone())
        .on::<UserUpdated, _>(handlers.clone())
        .on::<StockReserved, _>(handlers.clone())
        .on::<StockReservationFailed, _>(handlers.clone())
        .with_prelude(handlers)
}

/// The reason an order is rejected with.
fn rejection_reason(e: &StockReservationFailed) -> String {
    if e.reason.is_empty() {
        "the inventory could not reserve every item".to_owned()
    } else {
        e.reason.clone()
    }
}

/// The orders one batch settled: order id → (status set, customer, total).
#[derive(Debug, Default)]
struct SettledByBatch(HashMap<Uuid, (OrderStatus, Uuid, i64)>);

#[async_trait::async_trait]
impl BatchPrelude for OrderHandlers {
    async fn prepare(
        &self,
        conn: &mut PgConnection,
        batch: &BatchView<'_>,
    ) -> Result<BatchState, HandlerError> {
        // The first answer about an order counts; a second one in the same batch finds the
        // order settled, like one in a later batch. Answers with an invalid id are left to
        // their handler, which dead-letters them.
        let mut answers: Vec<(Uuid, OrderStatus, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let reserved = batch
            .events::<StockReserved>()
            .map(|e| (e.order_id.as_str(), OrderStatus::Confirmed, String::new()));
        let failed = batch.events::<StockReservationFailed>().map(|e| {
            (
                e.order_id.as_str(),
                OrderStatus::Rejected,
                rejection_reason(e),
            )
        });
        for (raw, status, reason) in reserved.chain(failed) {
            if let Ok(id) = Uuid::parse_str(raw)
                && seen.insert(id)
            {
                answers.push((id, status, reason));
            }
        }
        let mut settled = SettledByBatch::default();
        if !answers.is_empty() {
            for row in repository::settle_pending(conn, &answers, now()).await? {
                let status = OrderStatus::parse(&row.status).unwrap_or(OrderStatus::Pending);
                settled
                    .0
                    .insert(row.order_id, (status, row.customer_id, row.total_cents));
            }
        }
        Ok(Box::new(settled))
    }

    async fn finish(&self, _: &mut PgConnection, _: BatchState) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn event_id(field: &str, raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw)
        .map_err(|_| HandlerError::permanent(format!("{field} {raw:?} is not a UUID")))
}

#[async_trait::async_trait]
impl Handle<UserCreated> for OrderHandlers {
    async fn handle(
        &self,
        e: &UserCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let id = event_id("user_id", &e.user_id)?;
        repository::customer_created(cx.conn(), id, &e.email, &e.name).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<UserUpdated> for OrderHandlers {
    async fn handle(
        &self,
        e: &UserUpdated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let id = event_id("user_id", &e.user_id)?;
        repository::customer_updated(cx.conn(), id, e.email.as_deref(), e.name.as_deref()).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<StockReserved> for OrderHandlers {
    async fn handle(
        &self,
        e: &StockReserved,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = event_id("order_id", &e.order_id)?;
        let Some((customer_id, total_cents)) = settle(cx, order_id, OrderStatus::Confirmed).await?
        else {
            return Ok(());
        };
        cx.stage(&OrderConfirmed {
            order_id: e.order_id.clone(),
            customer_id: customer_id.to_string(),
            total_cents,
        });
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<StockReservationFailed> for OrderHandlers {
    async fn handle(
        &self,
        e: &StockReservationFailed,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = event_id("order_id", &e.order_id)?;
        let reason = rejection_reason(e);
        let Some((customer_id, _)) = settle(cx, order_id, OrderStatus::Rejected).await? else {
            return Ok(());
        };
        cx.stage(&OrderRejected {
            order_id: e.order_id.clone(),
            customer_id: customer_id.to_string(),
            reason,
        });
        Ok(())
    }
}

/// What the batch's prelude made of this order: its customer and total when the batch moved
/// it to `status` (the answer is published once: the entry is taken), or `None` when the
/// order was no longer PENDING (cancelled meanwhile, or a repeated answer): then nothing
/// changes. An answer about an order that does not exist is a permanent failure:
/// order.created is only published after the order committed.
async fn settle(
    cx: &mut HandlerContext<'_>,
    order_id: Uuid,
    status: OrderStatus,
) -> Result<Option<(Uuid, i64)>, HandlerError> {
    let settled = cx
        .batch_state::<SettledByBatch>()
        .ok_or_else(|| HandlerError::permanent("the order handlers run inside their prelude"))?;
    if let Some(&(set, customer_id, total_cents)) = settled.0.get(&order_id)
        && set == status
    {
        settled.0.remove(&order_id);
        return Ok(Some((customer_id, total_cents)));
    }
    match repository::find_order(cx.conn(), order_id).await? {
        None => Err(HandlerError::permanent(format!(
            "order {order_id} does not exist"
        ))),
        Some(order) => {
            tracing::info!(%order_id, status = %order.status, "inventory answer ignored: order no longer pending");
            Ok(None)
        }
    }
}

/// `order.created` for a new order.
pub(crate) fn order_created(order: &OrderRow) -> OrderCreated {
    OrderCreated {
        order_id: order.order_id.to_string(),
        customer_id: order.customer_id.to_string(),
        items: order.items.0.iter().map(Into::into).collect(),
        total_cents: order.total_cents,
        create_time: Some(timestamp(order.created_at)),
    }
}

/// `order.cancelled` for a cancelled order.
pub(crate) fn order_cancelled(order: &OrderRow, reason: &str) -> OrderCancelled {
    OrderCancelled {
        order_id: order.order_id.to_string(),
        customer_id: order.customer_id.to_string(),
        reason: reason.to_owned(),
    }
}

/// Items as the proto line items.
pub(crate) fn line_items(items: &[Item]) -> Vec<shop_proto::order::v1::LineItem> {
    items.iter().map(Into::into).collect()
}
