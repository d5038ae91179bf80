//! The metrics of the four services, scraped from their real HTTP ports (`GET /metrics`) as
//! Prometheus does: what a saga, a duplicate delivery, a poison message and a caller's
//! mistake leave in them, each series labelled with its own service only.

use shop_proto::Event as _;
use shop_proto::order::v1::{GetOrderRequest, OrderCreated, OrderStatus};
use shop_shared::messaging::Envelope;
use shop_shared::testing::{EventProbe, eventually, metric, publish_envelope, scrape};
use shop_tests::{TestSystem, WAIT};

/// Waits until `name{labels}` scraped from `addr` reaches `at_least`; returns the scrape.
async fn until_at_least(
    addr: std::net::SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> String {
    let what = format!("{name}{labels:?} >= {at_least} at {addr}");
    eventually(WAIT, &what, || async {
        let text = scrape(addr).await;
        (metric(&text, name, labels) >= at_least).then_some(text)
    })
    .await
}

const PROCESSED: &str = "messaging_process_duration_seconds_count";

#[tokio::test]
async fn a_saga_shows_in_every_services_metrics() {
    // Arrange
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("apple", 10).await;

    // Act: one confirmed order, and one call for an order that does not exist.
    let order = system.order(&customer, &[("apple", 2)]).await;
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );
    let missing = system
        .clients
        .order
        .clone()
        .get_order(GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("no such order");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    system.notifications(&customer, 3).await;

    // Assert: the order service answered the calls and published the events.
    let names = &system.broker.names;
    let exchange = names.exchange();
    let rpc = |method: &'static str, code: &'static str| {
        [
            ("rpc_service", "shop.order.v1.OrderService"),
            ("rpc_method", method),
            ("rpc_grpc_status_code", code),
        ]
    };
    let order_text = until_at_least(
        system.http.order,
        "messaging_client_sent_messages_total",
        &[
            ("messaging_destination_name", exchange.as_str()),
            ("routing_key", "order.confirmed"),
        ],
        1.0,
    )
    .await;
    let count = "rpc_server_call_duration_seconds_count";
    // The customer probe's order and the real one.
    assert!(
        metric(&order_text, count, &rpc("CreateOrder", "0")) >= 2.0,
        "{order_text}"
    );
    assert_eq!(
        metric(&order_text, count, &rpc("GetOrder", "5")),
        1.0,
        "{order_text}"
    );
    assert!(
        metric(
            &order_text,
            "messaging_client_sent_messages_total",
            &[("routing_key", "order.created")]
        ) >= 2.0,
        "{order_text}"
    );
    assert!(
        order_text.contains("# TYPE rpc_server_call_duration_seconds histogram"),
        "{order_text}"
    );
    assert!(
        metric(&order_text, "shop_amqp_connections_opened_total", &[]) >= 2.0,
        "the relay's and the consumer's: {order_text}"
    );
    let order_queue = names.queue("order");
    assert!(
        metric(
            &order_text,
            PROCESSED,
            &[
                ("messaging_destination_name", order_queue.as_str()),
                ("routing_key", "inventory.reserved"),
                ("outcome", "applied")
            ]
        ) >= 1.0,
        "{order_text}"
    );
    // The inventory applied order.created, the notification service order.confirmed.
    let inventory_queue = names.queue("inventory");
    until_at_least(
        system.http.inventory,
        PROCESSED,
        &[
            ("messaging_destination_name", inventory_queue.as_str()),
            ("routing_key", "order.created"),
            ("outcome", "applied"),
        ],
        2.0,
    )
    .await;
    let notification_queue = names.queue("notification");
    until_at_least(
        system.http.notification,
        PROCESSED,
        &[
            ("messaging_destination_name", notification_queue.as_str()),
            ("routing_key", "order.confirmed"),
            ("outcome", "applied"),
        ],
        1.0,
    )
    .await;
    // The sampled gauges are there; nothing waits in the inventory's dead-letter queue.
    let inventory_dlq = names.dlq("inventory");
    let sampled = format!("queue=\"{inventory_dlq}\"");
    let inventory_text = eventually(WAIT, "the dead letters sampled", || async {
        let text = scrape(system.http.inventory).await;
        text.contains(&sampled).then_some(text)
    })
    .await;
    assert_eq!(
        metric(
            &inventory_text,
            "shop_dead_letter_messages",
            &[("queue", inventory_dlq.as_str())]
        ),
        0.0,
        "{inventory_text}"
    );
    for gauge in [
        "shop_outbox_pending_messages",
        "shop_outbox_oldest_pending_age_seconds",
        "shop_dead_letter_messages",
    ] {
        assert!(
            inventory_text.contains(&format!("# TYPE {gauge} gauge")),
            "{gauge}: {inventory_text}"
        );
    }
    // Each port serves its own service's series only.
    for (addr, service) in [
        (system.http.user, "user"),
        (system.http.order, "order"),
        (system.http.inventory, "inventory"),
        (system.http.notification, "notification"),
    ] {
        let text = scrape(addr).await;
        for series in shop_shared::testing::parse_metrics(&text) {
            assert!(
                series
                    .labels
                    .iter()
                    .any(|(k, v)| k == "service" && v == service),
                "{service}'s port serves {series:?}"
            );
        }
    }
    // The user service consumes nothing: no deliveries, but its calls.
    let user_text = scrape(system.http.user).await;
    assert_eq!(metric(&user_text, PROCESSED, &[]), 0.0, "{user_text}");
    assert!(
        metric(
            &user_text,
            count,
            &[
                ("rpc_service", "shop.user.v1.UserService"),
                ("rpc_method", "Login"),
                ("rpc_grpc_status_code", "0")
            ]
        ) >= 2.0,
        "staff and customer logins: {user_text}"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_duplicate_delivery_and_a_poison_message_are_counted_as_such() {
    // Arrange: a real order.created off the broker.
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["order.created"]).await;
    system.customer().await;
    let (_, original) = probe.expect_event::<OrderCreated>(WAIT).await; // the customer probe's
    let names = &system.broker.names;
    let inventory_queue = names.queue("inventory");
    let processed = |outcome: &'static str| {
        [
            ("messaging_destination_name", inventory_queue.as_str()),
            ("routing_key", OrderCreated::ROUTING_KEY),
            ("outcome", outcome),
        ]
    };
    until_at_least(system.http.inventory, PROCESSED, &processed("applied"), 1.0).await;

    // Act: the same message again, then bytes that are no OrderCreated under its type.
    let again = original.redelivery("order");
    publish_envelope(&system.broker, &again).await;
    let poison = Envelope {
        message_id: shop_shared::messaging::MessageId::new(),
        payload: vec![0xff, 0xff, 0xff],
        ..again
    };
    publish_envelope(&system.broker, &poison).await;

    // Assert
    until_at_least(
        system.http.inventory,
        PROCESSED,
        &processed("duplicate"),
        1.0,
    )
    .await;
    until_at_least(
        system.http.inventory,
        PROCESSED,
        &processed("dead_lettered"),
        1.0,
    )
    .await;
    let inventory_dlq = names.dlq("inventory");
    let text = until_at_least(
        system.http.inventory,
        "shop_dead_letter_messages",
        &[("queue", inventory_dlq.as_str())],
        1.0,
    )
    .await;
    assert_eq!(
        metric(&text, PROCESSED, &processed("applied")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, PROCESSED, &processed("duplicate")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, PROCESSED, &processed("dead_lettered")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "shop_dead_letter_messages",
            &[("queue", inventory_dlq.as_str())]
        ),
        1.0,
        "{text}"
    );
    system.stop().await;
}
