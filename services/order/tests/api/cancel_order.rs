use shop_proto::inventory::v1::{StockReservationFailed, StockReserved};
use shop_proto::order::v1::{CancelOrderRequest, OrderCancelled, OrderStatus};
use shop_shared::testing::publish;
use tonic::Code;

use crate::helpers::{WAIT, item, spawn_app};

fn cancel(order_id: &str) -> CancelOrderRequest {
    CancelOrderRequest {
        order_id: order_id.into(),
        reason: "changed my mind".into(),
    }
}

#[tokio::test]
async fn cancel_order_cancels_and_publishes_order_cancelled() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let order = app.create(&customer, vec![item("a", 1, 10)]).await;

    let cancelled = app
        .client
        .cancel_order(cancel(&order.order_id))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    assert_eq!(cancelled.status_reason, "changed my mind");
    let (event, _) = app.events.expect_event::<OrderCancelled>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.reason, "changed my mind");
    assert_eq!((event.items.len(), event.total_cents), (1, 10));
    assert_eq!(event.items[0].product_id, "a");
}

#[tokio::test]
async fn cancel_returns_failed_precondition_when_already_cancelled_or_rejected() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let cancelled = app.create(&customer, vec![item("a", 1, 10)]).await;
    app.client
        .cancel_order(cancel(&cancelled.order_id))
        .await
        .unwrap();
    let again = app
        .client
        .cancel_order(cancel(&cancelled.order_id))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    let rejected = app.create(&customer, vec![item("b", 1, 10)]).await;
    publish(
        &app.env.broker,
        &StockReservationFailed {
            order_id: rejected.order_id.clone(),
            reason: "none left".into(),
            shortages: vec![],
        },
    )
    .await;
    app.wait_for_status(&rejected.order_id, OrderStatus::Rejected)
        .await;
    let status = app
        .client
        .cancel_order(cancel(&rejected.order_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn cancel_returns_not_found_for_an_unknown_order() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .cancel_order(cancel(&uuid::Uuid::now_v7().to_string()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn an_inventory_answer_for_a_cancelled_order_is_ignored() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let order = app.create(&customer, vec![item("a", 1, 10)]).await;
    app.client
        .cancel_order(cancel(&order.order_id))
        .await
        .unwrap();

    publish(
        &app.env.broker,
        &StockReserved {
            order_id: order.order_id.clone(),
            items: vec![],
        },
    )
    .await;
    // A later answer on the same queue proves the earlier one was handled.
    let marker = app.create(&customer, vec![item("m", 1, 1)]).await;
    publish(
        &app.env.broker,
        &StockReserved {
            order_id: marker.order_id.clone(),
            items: vec![],
        },
    )
    .await;
    app.wait_for_status(&marker.order_id, OrderStatus::Confirmed)
        .await;

    assert_eq!(
        app.get(&order.order_id).await.status,
        OrderStatus::Cancelled as i32
    );
}
