use std::time::Duration;

use shop_proto::inventory::v1::{StockReleased, StockReservationFailed, StockReserved};
use shop_proto::order::v1::OrderCancelled;
use shop_shared::messaging::{Envelope, EventContext};
use shop_shared::testing::{publish, publish_envelope};

use crate::helpers::{WAIT, order_created, spawn_app};

fn cancelled(order_id: &str) -> OrderCancelled {
    OrderCancelled {
        order_id: order_id.into(),
        customer_id: String::new(),
        reason: "test".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn order_created_reserves_every_item_and_publishes_inventory_reserved() {
    let mut app = spawn_app().await;
    app.stock_up("a", 5).await;
    app.stock_up("b", 2).await;
    let order = order_created(&[("a", 3), ("b", 2)]);

    publish(&app.env.broker, &order).await;

    let (event, received) = app.events.expect_event::<StockReserved>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.items.len(), 2);
    assert_eq!(
        received.properties.app_id().as_ref().unwrap().as_str(),
        "inventory"
    );
    assert_eq!(app.stock("a").await, (2, 3));
    assert_eq!(app.stock("b").await, (0, 2));
}

#[tokio::test]
async fn one_short_item_reserves_nothing_and_reports_the_shortage() {
    let mut app = spawn_app().await;
    app.stock_up("a", 5).await;
    app.stock_up("b", 1).await;
    let order = order_created(&[("a", 3), ("b", 2), ("unknown", 1)]);

    publish(&app.env.broker, &order).await;

    let (event, _) = app
        .events
        .expect_event::<StockReservationFailed>(WAIT)
        .await;
    assert_eq!(event.order_id, order.order_id);
    let mut short: Vec<(String, i32, i64)> = event
        .shortages
        .iter()
        .map(|s| (s.product_id.clone(), s.requested, s.available))
        .collect();
    short.sort();
    assert_eq!(short, [("b".into(), 2, 1), ("unknown".into(), 1, 0)]);
    assert!(event.reason.contains('b'), "{}", event.reason);
    assert_eq!(app.stock("a").await, (5, 0), "all or nothing");
    assert_eq!(app.stock("b").await, (1, 0));
}

#[tokio::test]
async fn cancellation_releases_the_reservation_once() {
    let mut app = spawn_app().await;
    app.stock_up("a", 5).await;
    let order = order_created(&[("a", 4)]);
    publish(&app.env.broker, &order).await;
    app.events.expect_event::<StockReserved>(WAIT).await;

    publish(&app.env.broker, &cancelled(&order.order_id)).await;
    publish(&app.env.broker, &cancelled(&order.order_id)).await; // a second, distinct cancellation

    let (event, _) = app.events.expect_event::<StockReleased>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert!(
        app.events.next(Duration::from_millis(700)).await.is_none(),
        "released once"
    );
    assert_eq!(app.stock("a").await, (5, 0));
}

#[tokio::test]
async fn a_cancellation_that_arrives_first_leaves_a_tombstone_and_the_late_order_reserves_nothing()
{
    let mut app = spawn_app().await;
    app.stock_up("a", 5).await;
    let order = order_created(&[("a", 2)]);

    publish(&app.env.broker, &cancelled(&order.order_id)).await;
    publish(&app.env.broker, &order).await;
    // A later order on the same queue proves the late one was handled.
    let marker = order_created(&[("a", 1)]);
    publish(&app.env.broker, &marker).await;

    let (event, _) = app.events.expect_event::<StockReserved>(WAIT).await;
    assert_eq!(
        event.order_id, marker.order_id,
        "the cancelled order reserved nothing"
    );
    assert_eq!(app.stock("a").await, (4, 1));
}

#[tokio::test]
async fn a_redelivered_order_created_reserves_once() {
    let mut app = spawn_app().await;
    app.stock_up("a", 10).await;
    let order = order_created(&[("a", 3)]);
    let envelope = Envelope::new(&order, "order", &EventContext::new_flow());

    publish_envelope(&app.env.broker, &envelope).await;
    publish_envelope(&app.env.broker, &envelope).await;
    let marker = order_created(&[("a", 1)]);
    publish(&app.env.broker, &marker).await;

    let (first, _) = app.events.expect_event::<StockReserved>(WAIT).await;
    assert_eq!(first.order_id, order.order_id);
    let (second, _) = app.events.expect_event::<StockReserved>(WAIT).await;
    assert_eq!(second.order_id, marker.order_id, "no second reservation");
    assert_eq!(app.stock("a").await, (6, 4));
}
