//! The order service's side of the saga: the events it consumes and the ones it publishes.
//! Each handler parses its event, decides with [`shop_saga`], and stages what the decision
//! publishes.
//!
//! - `user.created` / `user.updated` → the customer profile ([`shop_saga::contact`]: the
//!   newest value of each field wins, whatever the arrival order).
//! - `inventory.reserved` → PENDING becomes CONFIRMED, `order.confirmed`.
//! - `inventory.reservation_failed` → PENDING becomes REJECTED, `order.rejected`.
//! - `order.reservation_deadline` (the order's own scheduled message, staged with the order)
//!   → PENDING becomes CANCELLED with the timeout as the reason, `order.cancelled`
//!   ([`shop_saga::order::on_deadline`]).
//!
//! An answer that settles an order cancels its deadline in the same transaction; a deadline
//! that comes anyway (its cancellation lost the race against its publication) finds the order
//! settled and changes nothing.
//!
//! An inventory answer for an order that is no longer PENDING (it was cancelled meanwhile, or
//! the answer is a duplicate) changes nothing ([`shop_saga::order::on_answer`]).
//!
//! The answers of a batch share one [`Answered`] state (see [`BatchState`]): it locks every
//! answered order in one statement, in order-id order; each answer is decided on it in
//! delivery order, and the settled orders are written in one UPDATE before the commit. Two
//! statements per batch instead of a few per answer: the order consumer was the saga's
//! bottleneck at full load.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shop_proto::Event as _;
use shop_proto::inventory::v1::{StockReservationFailed, StockReserved};
use shop_proto::order::v1::{
    OrderCancelled, OrderConfirmed, OrderCreated, OrderRejected, ReservationDeadline,
};
use shop_proto::user::v1::{UserCreated, UserUpdated};
use shop_saga::contact::ContactChange;
use shop_saga::order::{Answer, on_answer, on_deadline};
use shop_shared::ids::{CustomerId, OrderId, UserId};
use shop_shared::messaging::{
    BatchState, BatchView, Handle, HandlerContext, HandlerError, Subscriptions, event_id, schedule,
};
use shop_shared::time::{from_timestamp, now, timestamp};
use sqlx::PgConnection;

use crate::domain::{Item, OrderStatus};
use crate::repository::{self, OrderRow};

/// The handlers of every event the order service consumes.
#[derive(Debug, Default)]
pub(crate) struct OrderHandlers;

/// What the order service subscribes to.
pub(crate) fn subscriptions() -> Subscriptions {
    let handlers = Arc::new(OrderHandlers);
    Subscriptions::with_state::<Answered>()
        .on::<UserCreated, _>(handlers.clone())
        .on::<UserUpdated, _>(handlers.clone())
        .on::<StockReserved, _>(handlers.clone())
        .on::<StockReservationFailed, _>(handlers.clone())
        .on::<ReservationDeadline, _>(handlers)
        .into()
}

/// The counter of orders cancelled by their deadline.
pub(crate) const DEADLINES_FIRED: &str = "shop_order_deadlines_fired_total";

/// The schedule key of an order's reservation deadline.
pub(crate) fn deadline_key(order_id: OrderId) -> String {
    format!("{}:{order_id}", ReservationDeadline::ROUTING_KEY)
}

/// The reason an order cancelled by its deadline is given.
pub(crate) fn deadline_reason(timeout_seconds: i64) -> String {
    format!("the inventory did not answer within {timeout_seconds} s")
}

/// The deadline message of a new order.
pub(crate) fn reservation_deadline(
    order: &OrderRow,
    timeout: std::time::Duration,
) -> ReservationDeadline {
    ReservationDeadline {
        order_id: order.order_id.to_string(),
        timeout_seconds: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
    }
}

/// The reason an order is rejected with.
fn rejection_reason(e: &StockReservationFailed) -> String {
    if e.reason.is_empty() {
        "the inventory could not reserve every item".to_owned()
    } else {
        e.reason.clone()
    }
}

/// An answered order as loaded and decided on.
#[derive(Debug)]
struct Order {
    status: OrderStatus,
    customer_id: CustomerId,
    total_cents: i64,
    items: Vec<Item>,
    /// Set when this batch settled the order: the reason to store.
    settled: Option<String>,
}

/// The orders one batch's inventory answers are about, locked.
#[derive(Debug, Default)]
pub(crate) struct Answered(BTreeMap<OrderId, Order>);

#[async_trait::async_trait]
impl BatchState for Answered {
    async fn load(conn: &mut PgConnection, batch: &BatchView<'_>) -> Result<Self, HandlerError> {
        // Answers with an invalid id are left to their handler, which dead-letters them.
        let ids: BTreeSet<OrderId> = batch
            .events::<StockReserved>()
            .map(|e| e.order_id.as_str())
            .chain(
                batch
                    .events::<StockReservationFailed>()
                    .map(|e| e.order_id.as_str()),
            )
            .chain(
                batch
                    .events::<ReservationDeadline>()
                    .map(|e| e.order_id.as_str()),
            )
            .filter_map(|raw| event_id(raw).ok())
            .collect();
        if ids.is_empty() {
            return Ok(Self::default());
        }
        let ids: Vec<OrderId> = ids.into_iter().collect();
        let mut orders = BTreeMap::new();
        for row in repository::lock_answered(conn, &ids).await? {
            let order = Order {
                status: row.status,
                customer_id: row.customer_id,
                total_cents: row.total_cents,
                items: row.items.0,
                settled: None,
            };
            orders.insert(row.order_id, order);
        }
        Ok(Self(orders))
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        let settled: Vec<(OrderId, OrderStatus, String)> = self
            .0
            .into_iter()
            .filter_map(|(id, o)| o.settled.map(|reason| (id, o.status, reason)))
            .collect();
        if !settled.is_empty() {
            repository::settle(conn, &settled, now()).await?;
            // Settled: their deadlines have nothing left to do (a no-op for those published).
            let keys: Vec<String> = settled.iter().map(|(id, _, _)| deadline_key(*id)).collect();
            schedule::cancel(conn, &keys).await?;
        }
        Ok(())
    }
}

impl Answered {
    /// Decides an inventory answer: the order (its customer, total and lines) when it moved to
    /// a new status (publish it), `None` when it was no longer PENDING. An answer about an
    /// order that does not exist is a permanent failure: order.created is only published after
    /// the order committed.
    fn answer(
        &mut self,
        order_id: OrderId,
        answer: Answer,
        reason: String,
    ) -> Result<Option<&Order>, HandlerError> {
        let order = self
            .0
            .get_mut(&order_id)
            .ok_or_else(|| HandlerError::permanent(format!("order {order_id} does not exist")))?;
        let Some(status) = on_answer(order.status, answer) else {
            tracing::info!(%order_id, status = order.status.as_str(), "inventory answer ignored: order no longer pending");
            return Ok(None);
        };
        order.status = status;
        order.settled = Some(reason);
        Ok(Some(order))
    }

    /// Decides an order's deadline: the order when it was still PENDING and is CANCELLED now
    /// (publish `order.cancelled`), `None` when it was settled before.
    fn deadline(
        &mut self,
        order_id: OrderId,
        reason: String,
    ) -> Result<Option<&Order>, HandlerError> {
        let order = self
            .0
            .get_mut(&order_id)
            .ok_or_else(|| HandlerError::permanent(format!("order {order_id} does not exist")))?;
        let Some(status) = on_deadline(order.status) else {
            tracing::debug!(%order_id, status = order.status.as_str(), "deadline ignored: order settled");
            return Ok(None);
        };
        order.status = status;
        order.settled = Some(reason);
        Ok(Some(order))
    }
}

/// Applies a change to a customer's contact: load (locked), decide, store.
async fn change_customer(
    conn: &mut PgConnection,
    customer_id: CustomerId,
    change: &ContactChange,
) -> Result<(), HandlerError> {
    let mut contact = repository::lock_customer(conn, customer_id).await?;
    if contact.apply(change) {
        repository::store_customer(conn, customer_id, &contact).await?;
    } else {
        tracing::info!(%customer_id, "contact change older than what is kept: ignored");
    }
    Ok(())
}

#[async_trait::async_trait]
impl Handle<UserCreated, Answered> for OrderHandlers {
    async fn handle(
        &self,
        e: &UserCreated,
        cx: &mut HandlerContext<'_, Answered>,
    ) -> Result<(), HandlerError> {
        let id = CustomerId::from(event_id::<UserId>(&e.user_id)?);
        let change = ContactChange::new(
            Some(e.email.clone()),
            Some(e.name.clone()),
            e.create_time.as_ref().and_then(from_timestamp),
        );
        change_customer(cx.conn(), id, &change).await
    }
}

#[async_trait::async_trait]
impl Handle<UserUpdated, Answered> for OrderHandlers {
    async fn handle(
        &self,
        e: &UserUpdated,
        cx: &mut HandlerContext<'_, Answered>,
    ) -> Result<(), HandlerError> {
        let id = CustomerId::from(event_id::<UserId>(&e.user_id)?);
        let change = ContactChange::new(
            e.email.clone(),
            e.name.clone(),
            e.update_time.as_ref().and_then(from_timestamp),
        );
        change_customer(cx.conn(), id, &change).await
    }
}

#[async_trait::async_trait]
impl Handle<StockReserved, Answered> for OrderHandlers {
    async fn handle(
        &self,
        e: &StockReserved,
        cx: &mut HandlerContext<'_, Answered>,
    ) -> Result<(), HandlerError> {
        let order_id: OrderId = event_id(&e.order_id)?;
        let Some(order) = cx
            .state()
            .answer(order_id, Answer::Reserved, String::new())?
        else {
            return Ok(());
        };
        let confirmed = OrderConfirmed {
            order_id: e.order_id.clone(),
            customer_id: order.customer_id.to_string(),
            total_cents: order.total_cents,
            items: line_items(&order.items),
        };
        cx.stage(&confirmed);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<StockReservationFailed, Answered> for OrderHandlers {
    async fn handle(
        &self,
        e: &StockReservationFailed,
        cx: &mut HandlerContext<'_, Answered>,
    ) -> Result<(), HandlerError> {
        let order_id: OrderId = event_id(&e.order_id)?;
        let reason = rejection_reason(e);
        let Some(order) = cx
            .state()
            .answer(order_id, Answer::Failed, reason.clone())?
        else {
            return Ok(());
        };
        let rejected = OrderRejected {
            order_id: e.order_id.clone(),
            customer_id: order.customer_id.to_string(),
            reason,
            items: line_items(&order.items),
            total_cents: order.total_cents,
        };
        cx.stage(&rejected);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<ReservationDeadline, Answered> for OrderHandlers {
    async fn handle(
        &self,
        e: &ReservationDeadline,
        cx: &mut HandlerContext<'_, Answered>,
    ) -> Result<(), HandlerError> {
        let order_id: OrderId = event_id(&e.order_id)?;
        let reason = deadline_reason(e.timeout_seconds);
        let Some(order) = cx.state().deadline(order_id, reason.clone())? else {
            return Ok(());
        };
        let cancelled = OrderCancelled {
            order_id: e.order_id.clone(),
            customer_id: order.customer_id.to_string(),
            reason,
            items: line_items(&order.items),
            total_cents: order.total_cents,
        };
        tracing::warn!(%order_id, timeout_s = e.timeout_seconds, "order cancelled: the inventory did not answer in time");
        cx.stage(&cancelled);
        cx.count(DEADLINES_FIRED);
        Ok(())
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
        items: line_items(&order.items.0),
        total_cents: order.total_cents,
    }
}

/// Items as the proto line items.
pub(crate) fn line_items(items: &[Item]) -> Vec<shop_proto::order::v1::LineItem> {
    items.iter().map(Into::into).collect()
}
