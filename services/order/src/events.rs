//! The order service's side of the saga: the events it consumes and the ones it publishes.
//!
//! - `user.created` / `user.updated` → the customer profile.
//! - `inventory.reserved` → PENDING becomes CONFIRMED, `order.confirmed`.
//! - `inventory.reservation_failed` → PENDING becomes REJECTED, `order.rejected`.
//!
//! An inventory answer for an order that is no longer PENDING (it was cancelled meanwhile, or
//! the answer is a duplicate) changes nothing (CONTRACT.md, Order saga).

use std::sync::Arc;

use shop_proto::inventory::v1::{StockReservationFailed, StockReserved};
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderCreated, OrderRejected};
use shop_proto::user::v1::{UserCreated, UserUpdated};
use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions};
use shop_shared::time::{now, timestamp};
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
        .on::<StockReservationFailed, _>(handlers)
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
        let Some((customer_id, total_cents)) =
            settle(cx, order_id, OrderStatus::Confirmed, "").await?
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
        let reason = if e.reason.is_empty() {
            "the inventory could not reserve every item".to_owned()
        } else {
            e.reason.clone()
        };
        let Some((customer_id, _)) = settle(cx, order_id, OrderStatus::Rejected, &reason).await?
        else {
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

/// Moves a PENDING order to `status`; returns its customer and total, or `None` when the
/// order is no longer PENDING (cancelled meanwhile, or a repeated answer): then nothing
/// changes. The conditional UPDATE waits for a concurrent CancelOrder's row lock and then
/// re-checks the status, so a cancellation always wins.
async fn settle(
    cx: &mut HandlerContext<'_>,
    order_id: Uuid,
    status: OrderStatus,
    reason: &str,
) -> Result<Option<(Uuid, i64)>, HandlerError> {
    if let Some(settled) =
        repository::settle_pending(cx.conn(), order_id, status, reason, now()).await?
    {
        return Ok(Some(settled));
    }
    match repository::find_order(cx.conn(), order_id).await? {
        // order.created is only published after the order committed: an answer about an
        // unknown order can never be applied.
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
