//! The unit tests of `metrics`.

use super::*;

#[test]
fn each_service_renders_only_its_own_series_with_its_label() {
    let order = Metrics::new("order");
    let inventory = Metrics::new("inventory");
    order.messages_sent("shop.events", "order.created", 3);
    inventory.messages_sent("shop.events", "inventory.reserved", 1);
    let text = order.render();
    assert!(
        text.contains(
            r#"messaging_client_sent_messages_total{service="order",messaging_destination_name="shop.events",routing_key="order.created"} 3"#
        ),
        "{text}"
    );
    assert!(!text.contains("inventory.reserved"), "{text}");
    assert!(!text.contains(r#"service="inventory""#), "{text}");
}

#[test]
fn durations_are_histograms_in_seconds() {
    let m = Metrics::new("inventory");
    m.delivery_settled(
        "inventory",
        "order.created",
        Outcome::Duplicate,
        Duration::from_millis(3),
    );
    m.rpc_answered(
        "shop.inventory.v1.InventoryService",
        "GetStock",
        5,
        Duration::from_millis(1),
    );
    let text = m.render();
    assert!(
        text.contains("# TYPE messaging_process_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"messaging_process_duration_seconds_bucket{service="inventory",messaging_destination_name="inventory",routing_key="order.created",outcome="duplicate",le="0.005"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"rpc_server_call_duration_seconds_count{service="inventory",rpc_service="shop.inventory.v1.InventoryService",rpc_method="GetStock",rpc_grpc_status_code="5"} 1"#
        ),
        "{text}"
    );
}
