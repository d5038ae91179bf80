//! The reservation deadline (docs/contract.md, "Order saga", Deadline): an order the inventory
//! never answers is cancelled `ORDER_RESERVATION_TIMEOUT_S` after CreateOrder, not before, with
//! the reason and `order.cancelled`; an answer cancels the deadline; a deadline that comes after
//! the answer changes nothing; the deadline survives a restart and fires once with two replicas.
//! The inventory is played by the test: here it never answers unless told to.

use std::sync::Arc;
use std::time::Duration;

use shop_proto::Event as _;
use shop_proto::inventory::v1::StockReserved;
use shop_proto::order::v1::{OrderCancelled, OrderStatus, ReservationDeadline};
use shop_shared::testing::{EventProbe, TestEnv, eventually, publish};

use crate::helpers::{WAIT, item, spawn_app_with};

const TIMEOUT: Duration = Duration::from_secs(2);

/// The `order.cancelled` events about `order_id` seen within `within`.
async fn cancellations_of(
    events: &mut EventProbe,
    order_id: &str,
    within: Duration,
) -> Vec<OrderCancelled> {
    let until = tokio::time::Instant::now() + within;
    let mut found = Vec::new();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let Some(received) = events.next(left).await else {
            return found;
        };
        if received.meta().routing_key == OrderCancelled::ROUTING_KEY {
            let event: OrderCancelled = received.decode();
            if event.order_id == order_id {
                found.push(event);
            }
        }
    }
}

#[tokio::test]
async fn an_order_the_inventory_never_answers_is_cancelled_at_its_deadline_with_the_reason() {
    let mut app = spawn_app_with(Arc::new(TestEnv::new().await), TIMEOUT).await;
    let customer = app.known_customer().await;

    let placed = std::time::Instant::now();
    let order = app.create(&customer, vec![item("a", 1, 10)]).await;
    assert_eq!(
        app.get(&order.order_id).await.status,
        OrderStatus::Pending as i32
    );

    let cancelled = app
        .wait_for_status(&order.order_id, OrderStatus::Cancelled)
        .await;
    assert!(
        placed.elapsed() >= TIMEOUT,
        "cancelled after {:?}, before its deadline",
        placed.elapsed()
    );
    assert_eq!(
        cancelled.status_reason,
        "the inventory did not answer within 2 s"
    );
    let events = cancellations_of(&mut app.events, &order.order_id, WAIT).await;
    assert_eq!(events.len(), 1, "one order.cancelled: {events:?}");
    assert_eq!(events[0].reason, "the inventory did not answer within 2 s");
    assert_eq!(events[0].customer_id, customer);
    assert_eq!((events[0].items.len(), events[0].total_cents), (1, 10));
}

#[tokio::test]
async fn an_answer_cancels_the_deadline_and_a_late_deadline_changes_nothing() {
    let mut app = spawn_app_with(Arc::new(TestEnv::new().await), Duration::from_secs(300)).await;
    let customer = app.known_customer().await;
    let order = app.create(&customer, vec![item("a", 1, 10)]).await;
    let pool = sqlx::PgPool::connect(&app.env.database.url)
        .await
        .expect("the order database");
    let key = format!("{}:{}", ReservationDeadline::ROUTING_KEY, order.order_id);
    let scheduled = || {
        let pool = pool.clone();
        let key = key.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            shop_shared::messaging::schedule::list(&mut conn, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|s| s.schedule_key.as_deref() == Some(key.as_str()))
                .count()
        }
    };
    assert_eq!(scheduled().await, 1, "CreateOrder scheduled its deadline");

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
    assert_eq!(scheduled().await, 0, "the answer cancelled the deadline");

    // The cancellation lost the race: the deadline arrives anyway, and finds it CONFIRMED.
    publish(
        &app.env.broker,
        &ReservationDeadline {
            order_id: order.order_id.clone(),
            timeout_seconds: 300,
        },
    )
    .await;
    // A second order's answer, published after it, applied means the deadline was handled.
    let marker = app.create(&customer, vec![item("b", 1, 10)]).await;
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
        OrderStatus::Confirmed as i32
    );
    assert!(
        cancellations_of(&mut app.events, &order.order_id, Duration::from_millis(500))
            .await
            .is_empty(),
        "no order.cancelled for a confirmed order"
    );
}

#[tokio::test]
async fn the_deadline_survives_a_restart_and_fires_once_with_two_replicas() {
    let env = Arc::new(TestEnv::new().await);
    let mut events = EventProbe::bind(&env.broker, &[OrderCancelled::ROUTING_KEY]).await;
    // One replica places the order and stops before its deadline.
    let mut first = spawn_app_with(Arc::clone(&env), TIMEOUT).await;
    let customer = first.known_customer().await;
    let order = first.create(&customer, vec![item("a", 1, 10)]).await;
    let first_addr = first.grpc_addr;
    drop(first.stop());
    eventually(WAIT, "the first replica to be gone", || async move {
        tokio::net::TcpStream::connect(first_addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // Two replicas start on the same database and queue.
    let mut a = spawn_app_with(Arc::clone(&env), TIMEOUT).await;
    let _b = spawn_app_with(Arc::clone(&env), TIMEOUT).await;
    let cancelled = a
        .wait_for_status(&order.order_id, OrderStatus::Cancelled)
        .await;
    assert_eq!(
        cancelled.status_reason,
        "the inventory did not answer within 2 s"
    );
    let seen = cancellations_of(&mut events, &order.order_id, Duration::from_secs(3)).await;
    assert_eq!(seen.len(), 1, "fired once: {seen:?}");
    drop(env);
}
