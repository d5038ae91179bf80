//! The order saga end to end: the four services in-process, driven through gRPC.

use std::collections::HashMap;

use shop_proto::order::v1::{CancelOrderRequest, OrderCreated, OrderStatus};
use shop_shared::testing::{EventProbe, publish_envelope};
use shop_tests::{TestSystem, WAIT};

#[tokio::test]
async fn a_stocked_order_is_confirmed_and_the_customer_notified() {
    // Arrange
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("apple", 10).await;
    system.stock_up("pear", 5).await;

    // Act
    let order = system.order(&customer, &[("apple", 3), ("pear", 5)]).await;

    // Assert
    assert_eq!(order.status, OrderStatus::Pending as i32);
    let settled = system.settled(&order.order_id).await;
    assert_eq!(
        settled.status,
        OrderStatus::Confirmed as i32,
        "{}",
        settled.status_reason
    );
    assert_eq!(system.stock("apple").await, (7, 3));
    assert_eq!(system.stock("pear").await, (0, 5));
    // welcome + the probe's rejection + the confirmation
    let notifications = system.notifications(&customer, 3).await;
    let confirmed: Vec<_> = notifications
        .iter()
        .filter(|n| n.order_id == order.order_id)
        .collect();
    assert_eq!(confirmed.len(), 1);
    assert_eq!(
        confirmed[0].source_event_type,
        "shop.order.v1.OrderConfirmed"
    );
    assert!(
        notifications
            .iter()
            .any(|n| n.source_event_type == "shop.user.v2.UserCreated")
    );
    system.stop().await;
}

#[tokio::test]
async fn the_four_services_of_one_process_share_one_publishing_and_one_consuming_connection() {
    // Arrange: every service has consumed and published (a saga ran to its end).
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("apple", 10).await;
    let order = system.order(&customer, &[("apple", 1)]).await;
    system.settled(&order.order_id).await;
    let services = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n.contains("shop-services-"))
            .collect()
    };
    let prefix = &system.broker.names.prefix;
    let expected = vec![
        format!("{prefix}shop-services-consume"),
        format!("{prefix}shop-services-publish"),
    ];

    // Assert: two connections, whatever the four relays and three consumers do.
    assert_eq!(
        services(shop_tests::own_connection_names(&system.broker)),
        expected
    );

    // Act: the broker drops them; every session reconnects through the same two.
    assert!(system.broker.close_own_connections() >= 2);
    let again = system.order(&customer, &[("apple", 1)]).await;
    let settled = system.settled(&again.order_id).await;

    // Assert
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(
        services(shop_tests::own_connection_names(&system.broker)),
        expected
    );
    system.stop().await;
}

#[tokio::test]
async fn every_event_of_a_saga_carries_the_cloud_events_attributes() {
    // Arrange: a probe of every key.
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["#"]).await;
    system.stock_up("apple", 10).await;

    // Act: a sign-up and an order confirmed.
    let customer = system.customer().await;
    let order = system.order(&customer, &[("apple", 1)]).await;

    // Assert: each message until the order's confirmation, in binary content mode.
    let mut seen = Vec::new();
    loop {
        let received = probe.expect(WAIT, "the saga's events").await;
        let meta = received.meta();
        let key = received.routing_key.clone();
        let ce = |name: &str| received.header(&format!("cloudEvents:{name}"));
        assert_eq!(ce("specversion").as_deref(), Some("1.0"), "{key}");
        assert_eq!(ce("id"), Some(meta.message_id.clone()), "{key}");
        let app_id = received.properties.app_id().as_ref().unwrap().to_string();
        assert_eq!(ce("source"), Some(format!("/shop/{app_id}")), "{key}");
        assert_eq!(ce("type"), Some(meta.message_type.clone()), "{key}");
        let time = ce("time").unwrap_or_default();
        let parsed = chrono::DateTime::parse_from_rfc3339(&time)
            .unwrap_or_else(|e| panic!("{key}: time {time:?}: {e}"));
        assert!(
            time.ends_with('Z') && time.len() == "2026-12-06T10:11:12.345Z".len(),
            "{time}"
        );
        assert!(
            (chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 60,
            "{time}"
        );
        // The subject is the user's or the order's id; only this customer's and this order's
        // events count (the staff account signs up too, and `customer()` places a probe order).
        let subject = ce("subject").unwrap_or_default();
        assert!(
            uuid::Uuid::parse_str(&subject).is_ok(),
            "{key}: {subject:?}"
        );
        let ours = if key.starts_with("user.") {
            &customer
        } else {
            &order.order_id
        };
        if subject != *ours {
            continue;
        }
        seen.push(key.clone());
        if key == "order.confirmed" {
            break;
        }
    }
    for key in [
        "user.created",
        "user.created.v2",
        "order.created",
        "inventory.reserved",
    ] {
        assert!(
            seen.contains(&key.to_owned()),
            "{key} missing from {seen:?}"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn an_order_beyond_the_stock_is_rejected_and_leaves_the_stock_untouched() {
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("apple", 2).await;

    let order = system.order(&customer, &[("apple", 3)]).await;

    let settled = system.settled(&order.order_id).await;
    assert_eq!(settled.status, OrderStatus::Rejected as i32);
    assert!(
        settled.status_reason.contains("apple"),
        "{}",
        settled.status_reason
    );
    assert_eq!(system.stock("apple").await, (2, 0));
    let notifications = system.notifications(&customer, 3).await;
    assert!(
        notifications.iter().any(|n| n.order_id == order.order_id
            && n.source_event_type == "shop.order.v1.OrderRejected")
    );
    system.stop().await;
}

#[tokio::test]
async fn one_short_item_rejects_the_whole_order() {
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("a", 10).await;
    system.stock_up("b", 10).await;
    system.stock_up("c", 1).await;

    let order = system
        .order(&customer, &[("a", 2), ("b", 2), ("c", 2)])
        .await;

    let settled = system.settled(&order.order_id).await;
    assert_eq!(settled.status, OrderStatus::Rejected as i32);
    assert_eq!(system.stock("a").await, (10, 0), "all or nothing");
    assert_eq!(system.stock("b").await, (10, 0));
    assert_eq!(system.stock("c").await, (1, 0));
    system.stop().await;
}

#[tokio::test]
async fn cancelling_a_confirmed_order_releases_its_stock() {
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("apple", 10).await;
    let order = system.order(&customer, &[("apple", 4)]).await;
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );

    let cancelled = system
        .clients
        .order
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    assert_eq!(cancelled.status, OrderStatus::Cancelled as i32);
    shop_shared::testing::eventually(WAIT, "the stock to be released", || async {
        (system.stock("apple").await == (10, 0)).then_some(())
    })
    .await;
    let notifications = system.notifications(&customer, 4).await;
    assert!(
        notifications.iter().any(|n| n.order_id == order.order_id
            && n.source_event_type == "shop.order.v1.OrderCancelled")
    );
    system.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_reservation_ends_cancelled_with_no_stock_held() {
    // Arrange: the inventory is built (its queue exists) but not running yet; its stock is
    // put in directly.
    let mut system = TestSystem::start_holding_back_inventory().await;
    let customer = system.customer().await;
    let inventory_db = shop_shared::db::connect(&system.databases[2].url, 1)
        .await
        .unwrap();
    sqlx::query("INSERT INTO stock (product_id, available, reserved) VALUES ('apple', 5, 0)")
        .execute(&inventory_db)
        .await
        .unwrap();

    // Act: place and cancel while the inventory is not consuming; then let it run.
    let order = system.order(&customer, &[("apple", 2)]).await;
    system
        .clients
        .order
        .clone()
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "too slow".into(),
        })
        .await
        .unwrap();
    system.release_inventory();

    // Assert: the inventory reserved and released (or never reserved); the order stays
    // cancelled whatever the inventory answered.
    shop_shared::testing::eventually(WAIT, "the reservation to be released", || async {
        (system.stock("apple").await == (5, 0)).then_some(())
    })
    .await;
    let order = system.settled(&order.order_id).await;
    assert_eq!(order.status, OrderStatus::Cancelled as i32);
    assert_eq!(order.status_reason, "too slow");
    system.stop().await;
}

#[tokio::test]
async fn a_redelivered_order_created_reserves_once() {
    // Arrange: capture the real order.created off the broker.
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["order.created"]).await;
    let customer = system.customer().await;
    probe.expect_event::<OrderCreated>(WAIT).await; // the customer probe's order
    system.stock_up("apple", 10).await;
    let order = system.order(&customer, &[("apple", 3)]).await;
    let (_, original) = probe.expect_event::<OrderCreated>(WAIT).await;
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );

    // Act: the same message (same message_id) delivered again, then a marker order.
    let envelope = original.redelivery("order");
    publish_envelope(&system.broker, &envelope).await;
    let marker = system.order(&customer, &[("apple", 1)]).await;
    system.settled(&marker.order_id).await;

    // Assert: reserved once for the order, once for the marker.
    assert_eq!(system.stock("apple").await, (6, 4));
    system.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_orders_for_fifty_units_never_oversell() {
    // Arrange
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("hot", 50).await;

    // Act: 200 CreateOrder calls at once, one unit each.
    let calls = (0..200).map(|_| {
        let mut orders = system.clients.order.clone();
        let request = shop_tests::order_request(&customer, &[("hot", 1)]);
        async move {
            orders
                .create_order(request)
                .await
                .map(|r| r.into_inner().order.unwrap())
        }
    });
    let placed: Vec<_> = futures::future::join_all(calls).await;
    let placed: Vec<_> = placed
        .into_iter()
        .map(|r| r.expect("CreateOrder succeeds"))
        .collect();

    // Assert
    let mut outcomes: HashMap<i32, usize> = HashMap::new();
    for order in &placed {
        *outcomes
            .entry(system.settled(&order.order_id).await.status)
            .or_default() += 1;
    }
    assert_eq!(outcomes.get(&(OrderStatus::Confirmed as i32)), Some(&50));
    assert_eq!(outcomes.get(&(OrderStatus::Rejected as i32)), Some(&150));
    assert_eq!(system.stock("hot").await, (0, 50));
    system.stop().await;
}
