//! The tonic `OrderService`: proto → domain, the use case in [`crate::orders`], domain →
//! proto.

use shop_proto::order::v1::order_service_server::OrderService;
use shop_proto::order::v1::{
    CancelOrderRequest, CancelOrderResponse, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, Order,
};
use shop_shared::auth::caller;
use shop_shared::time::timestamp;
use tonic::{Request, Response, Status};

use shop_shared::ids::{CustomerId, OrderId};

use crate::domain::{NewOrder, PageToken, cancel_reason, page_size};
use crate::events::line_items;
use crate::orders::Orders;
use crate::repository::OrderRow;

/// The gRPC face of the order service.
#[derive(Debug, Clone)]
pub(crate) struct OrderGrpc {
    pub(crate) orders: Orders,
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let caller = caller(&request)?;
        let context = shop_shared::grpc::event_context(&request);
        let new = NewOrder::try_from(request.into_inner())?;
        let order = self.orders.place(&caller, new, &context).await?;
        Ok(Response::new(CreateOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<GetOrderResponse>, Status> {
        let caller = caller(&request)?;
        let order_id = OrderId::parse(&request.get_ref().order_id)?;
        let order = self.orders.get(&caller, order_id).await?;
        Ok(Response::new(GetOrderResponse {
            order: Some(to_proto(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let customer_id = CustomerId::parse(&r.customer_id)?;
        let limit = page_size(r.page_size)?;
        let after = PageToken::parse(&r.page_token)?;
        let page = self.orders.list(&caller, customer_id, limit, after).await?;
        Ok(Response::new(ListOrdersResponse {
            orders: page.orders.iter().map(to_proto).collect(),
            next_page_token: page.next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, Status> {
        let caller = caller(&request)?;
        let context = shop_shared::grpc::event_context(&request);
        let r = request.into_inner();
        let order_id = OrderId::parse(&r.order_id)?;
        let reason = cancel_reason(&r.reason)?;
        let order = self
            .orders
            .cancel(&caller, order_id, reason, &context)
            .await?;
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
        status: crate::domain::to_proto(order.status).into(),
        status_reason: order.status_reason.clone(),
        create_time: Some(timestamp(order.created_at)),
        update_time: Some(timestamp(order.updated_at)),
    }
}
