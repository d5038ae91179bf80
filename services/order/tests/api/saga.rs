use shop_proto::inventory::v1::{Shortage, StockReservationFailed, StockReserved};
use shop_proto::order::v1::{OrderConfirmed, OrderCreated, OrderRejected, OrderStatus};
use shop_shared::testing::publish;

use crate::helpers::{WAIT, item, spawn_app};

#[tokio::test]
async fn inventory_reserved_confirms_the_order_and_publishes_order_confirmed() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let order = app.create(&customer, vec![item("a", 2, 10)]).await;

    publish(
        &app.env.broker,
        &StockReserved {
            order_id: order.order_id.clone(),
            items: vec![],
        },
    )
    .await;

    app.wait_for_status(&order.order_id, OrderStatus::Confirmed)
        .await;
    let (event, received) = app.events.expect_event::<OrderConfirmed>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.total_cents, 20);
    // The order's lines go with it, for the customer's email.
    assert_eq!(event.items.len(), 1);
    assert_eq!(
        (
            event.items[0].product_id.as_str(),
            event.items[0].quantity,
            event.items[0].unit_price_cents
        ),
        ("a", 2, 10)
    );
    assert!(
        received.header("x-causation-id").is_some(),
        "caused by inventory.reserved"
    );
}

#[tokio::test]
async fn reservation_failed_rejects_the_order_with_the_reason() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let order = app.create(&customer, vec![item("a", 2, 10)]).await;

    publish(
        &app.env.broker,
        &StockReservationFailed {
            order_id: order.order_id.clone(),
            reason: "insufficient stock for a".into(),
            shortages: vec![Shortage {
                product_id: "a".into(),
                requested: 2,
                available: 0,
            }],
        },
    )
    .await;

    let rejected = app
        .wait_for_status(&order.order_id, OrderStatus::Rejected)
        .await;
    assert_eq!(rejected.status_reason, "insufficient stock for a");
    let (event, _) = app.events.expect_event::<OrderRejected>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.reason, "insufficient stock for a");
    assert_eq!((event.items.len(), event.total_cents), (1, 20));
    // The orders' own order.created events came first.
    let _ = OrderCreated::default();
}
