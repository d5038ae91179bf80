//! The order service's use cases, one function per RPC: authorize, validate, write, stage —
//! in that order, with no gRPC in sight (`grpc.rs` only converts).
//!
//! Authorization (docs/contract.md): a customer places and lists orders for themself only
//! (PERMISSION_DENIED otherwise) and reads or cancels only their own orders; someone else's
//! order answers NOT_FOUND, exactly like a missing one, so order ids cannot be probed. Staff
//! may do everything.

use std::time::Duration;

use shop_shared::auth::Caller;
use shop_shared::ids::{CustomerId, OrderId};
use shop_shared::messaging::{Envelope, EventContext, OutboxWaker, outbox, schedule};
use shop_shared::time::now;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::OrderError;
use crate::domain::{NewOrder, OrderStatus, PageToken};
use crate::events::{deadline_key, order_cancelled, order_created, reservation_deadline};
use crate::repository::{self, OrderRow, Scheduled};

/// What the use cases work with.
#[derive(Debug, Clone)]
pub(crate) struct Orders {
    pub(crate) pool: PgPool,
    /// Wakes this process's outbox relay after a commit that staged events.
    pub(crate) waker: OutboxWaker,
    /// How long an order may wait for the inventory (`ORDER_RESERVATION_TIMEOUT_S`).
    pub(crate) reservation_timeout: Duration,
}

/// One page of a customer's orders.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) orders: Vec<OrderRow>,
    /// The token of the next page, when there is one.
    pub(crate) next: Option<PageToken>,
}

impl Orders {
    /// CreateOrder: the customer themself (or staff) places an order for a known customer;
    /// the order and its `order.created` are written in one statement.
    pub(crate) async fn place(
        &self,
        caller: &Caller,
        new: NewOrder,
        context: &EventContext,
    ) -> Result<OrderRow, OrderError> {
        if !caller.may_act_for(new.customer_id) {
            return Err(OrderError::PermissionDenied(
                "you may only place orders for yourself",
            ));
        }
        let at = now();
        let order = OrderRow {
            order_id: OrderId::new(),
            customer_id: new.customer_id,
            items: Json(new.items.clone()),
            total_cents: new.total_cents,
            status: OrderStatus::Pending,
            status_reason: String::new(),
            created_at: at,
            updated_at: at,
        };
        let key = new.idempotency_key.as_ref();
        // The order exists if and only if order.created will be published: one statement
        // writes both.
        let created = Envelope::new(&order_created(&order), "", context);
        // Its deadline: cancelled by the inventory's answer, or it cancels the order.
        let deadline = Envelope::new(
            &reservation_deadline(&order, self.reservation_timeout),
            "",
            context,
        );
        let due = at
            + chrono::Duration::from_std(self.reservation_timeout)
                .map_err(|e| OrderError::from(anyhow::Error::from(e)))?;
        let deadline_key = deadline_key(order.order_id);
        let scheduled = Scheduled {
            envelope: &deadline,
            due,
            key: &deadline_key,
        };
        let mut conn = self.pool.acquire().await?;
        let inserted =
            repository::create_order_staging_event(&mut conn, &order, key, &created, &scheduled)
                .await?;
        if inserted {
            drop(conn);
            // Committed: the relay publishes order.created at once (the fast path).
            self.waker.committed(vec![created]);
            return Ok(order);
        }
        // Either the key was used before (a retried call: the conflicting insert has
        // committed, or this one would have succeeded) or the customer is unknown here yet.
        let first = match key {
            Some(key) => {
                repository::find_by_idempotency_key(&mut conn, new.customer_id, key).await?
            }
            None => None,
        };
        match first {
            // The same order again: answer with the first one, create nothing.
            Some(first) if first.items.0 == new.items => Ok(first),
            Some(_) => Err(OrderError::IdempotencyKeyReused(
                key.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            )),
            None => Err(OrderError::UnknownCustomer(new.customer_id.to_string())),
        }
    }

    /// GetOrder: the order's customer, or staff.
    pub(crate) async fn get(
        &self,
        caller: &Caller,
        order_id: OrderId,
    ) -> Result<OrderRow, OrderError> {
        let mut conn = self.pool.acquire().await?;
        repository::find_order(&mut conn, order_id)
            .await?
            .filter(|order| caller.may_act_for(order.customer_id))
            .ok_or(OrderError::NotFound)
    }

    /// ListOrders: the customer themself, or staff.
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        customer_id: CustomerId,
        limit: i64,
        after: Option<PageToken>,
    ) -> Result<Page, OrderError> {
        if !caller.may_act_for(customer_id) {
            return Err(OrderError::PermissionDenied(
                "you may only list your own orders",
            ));
        }
        let mut conn = self.pool.acquire().await?;
        // One more than asked tells whether another page follows.
        let mut rows =
            repository::list_orders(&mut conn, customer_id, after.map(|t| t.0), limit + 1).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = match rows.last() {
            Some(last) if more => Some(PageToken(last.order_id)),
            _ => None,
        };
        Ok(Page { orders: rows, next })
    }

    /// CancelOrder: the order's customer, or staff; publishes `order.cancelled`.
    pub(crate) async fn cancel(
        &self,
        caller: &Caller,
        order_id: OrderId,
        reason: String,
        context: &EventContext,
    ) -> Result<OrderRow, OrderError> {
        let mut tx = self.pool.begin().await?;
        // Locked: a concurrent inventory answer waits, then sees CANCELLED and is ignored.
        let mut order = repository::lock_order(&mut tx, order_id)
            .await?
            .filter(|order| caller.may_act_for(order.customer_id))
            .ok_or(OrderError::NotFound)?;
        let cancelled = shop_saga::order::cancel(order.status)
            .map_err(|status| OrderError::NotCancellable(status.as_str()))?;
        let at = now();
        repository::set_status(&mut tx, order_id, cancelled, &reason, at).await?;
        let event = Envelope::new(&order_cancelled(&order, &reason), "", context);
        outbox::stage_envelope(&mut tx, &event).await?;
        // No longer pending: its deadline has nothing left to do.
        schedule::cancel(&mut tx, &[deadline_key(order_id)]).await?;
        tx.commit().await?;
        self.waker.committed(vec![event]);
        order.status = cancelled;
        order.status_reason = reason;
        order.updated_at = at;
        Ok(order)
    }
}
