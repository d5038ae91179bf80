//! The tonic `OrderService`: request → domain → repository/outbox → response.

use shop_proto::order::v1::order_service_server::OrderService;
use shop_proto::order::v1::{
    CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, Order,
};
use shop_shared::messaging::{Envelope, OutboxWaker, outbox};
use shop_shared::time::{now, timestamp};
use sqlx::PgPool;
use sqlx::types::Json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::OrderError;
use crate::domain::{NewOrder, OrderStatus, PageToken, cancel_reason, page_size, parse_id};
use crate::events::{line_items, order_cancelled, order_created};
use crate::repository::{self, OrderRow};

/// The gRPC face of the order service.
#[derive(Debug, Clone)]
pub(crate) struct OrderGrpc {
    pub(crate) pool: PgPool,
    /// Wakes this process's outbox relay after a commit that staged events.
    pub(crate) waker: OutboxWaker,
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let context = shop_shared::grpc::event_context(&request);
        let new = NewOrder::try_from(request.into_inner())?;
        let at = now();
        let order = OrderRow {
            order_id: Uuid::now_v7(),
            customer_id: new.customer_id,
            items: Json(new.items),
            total_cents: new.total_cents,
            status: OrderStatus::Pending.as_str().to_owned(),
            status_reason: String::new(),
            created_at: at,
            updated_at: at,
        };
        let key = new.idempotency_key.as_deref();
        // The order exists if and only if order.created will be published: one statement
        // writes both.
        let created = Envelope::new(&order_created(&order), "", &context);
        let mut conn = self.pool.acquire().await.map_err(OrderError::from)?;
        let inserted = repository::create_order_staging_event(&mut conn, &order, key, &created)
            .await
            .map_err(OrderError::from)?;
        if !inserted {
            // Either the key was used before (return that order: a retried call; the
            // conflicting insert has committed, or this one would have succeeded) or the
            // customer is unknown here yet.
            let first = match key {
                Some(key) => repository::find_by_idempotency_key(&mut conn, new.customer_id, key)
                    .await
                    .map_err(OrderError::from)?,
                None => None,
            };
            return match first {
                Some(first) => Ok(Response::new(CreateOrderResponse {
                    order: Some(to_proto(&first)),
                })),
                None => Err(OrderError::UnknownCustomer(new.customer_id.to_string()).into()),
            };
        }
        drop(conn);
        self.waker.wake();
        Ok(Response::new(CreateOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let order_id = parse_id("order_id", &request.get_ref().order_id)?;
        let mut conn = self.pool.acquire().await.map_err(OrderError::from)?;
        let order = repository::find_order(&mut conn, order_id)
            .await
            .map_err(OrderError::from)?
            .ok_or(OrderError::NotFound)?;
        Ok(Response::new(GetOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let r = request.into_inner();
        let customer_id = parse_id("customer_id", &r.customer_id)?;
        let limit = page_size(r.page_size)?;
        let after = PageToken::parse(&r.page_token)?;
        let mut conn = self.pool.acquire().await.map_err(OrderError::from)?;
        // One more than asked tells whether another page follows.
        let mut rows =
            repository::list_orders(&mut conn, customer_id, after.map(|t| t.0), limit + 1)
                .await
                .map_err(OrderError::from)?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => PageToken(last.order_id).encode(),
            _ => String::new(),
        };
        Ok(Response::new(ListOrdersResponse {
            orders: rows.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let context = shop_shared::grpc::event_context(&request);
        let r = request.into_inner();
        let order_id = parse_id("order_id", &r.order_id)?;
        let reason = cancel_reason(&r.reason)?;
        let mut tx = self.pool.begin().await.map_err(OrderError::from)?;
        // Locked: a concurrent inventory answer waits, then sees CANCELLED and is ignored.
        let mut order = repository::lock_order(&mut tx, order_id)
            .await
            .map_err(OrderError::from)?
            .ok_or(OrderError::NotFound)?;
        match order.status() {
            OrderStatus::Rejected => return Err(OrderError::NotCancellable("REJECTED").into()),
            OrderStatus::Cancelled => return Err(OrderError::NotCancellable("CANCELLED").into()),
            OrderStatus::Pending | OrderStatus::Confirmed => {}
        }
        let at = now();
        repository::set_status(&mut tx, order_id, OrderStatus::Cancelled, &reason, at)
            .await
            .map_err(OrderError::from)?;
        outbox::stage(&mut tx, &order_cancelled(&order, &reason), &context)
            .await
            .map_err(OrderError::from)?;
        tx.commit().await.map_err(OrderError::from)?;
        self.waker.wake();
        order.status = OrderStatus::Cancelled.as_str().to_owned();
        order.status_reason = reason;
        order.updated_at = at;
        Ok(Response::new(CancelOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }
}

fn to_proto(order: &OrderRow) -> Order {
    Order {
        order_id: order.order_id.to_string(),
        customer_id: order.customer_id.to_string(),
        items: line_items(&order.items.0),
        total_cents: order.total_cents,
        status: order.status().to_proto().into(),
        status_reason: order.status_reason.clone(),
        create_time: Some(timestamp(order.created_at)),
        update_time: Some(timestamp(order.updated_at)),
    }
}
