//! The real export path: with an OTLP endpoint configured, spans of a flow reach an OTLP/gRPC
//! receiver (here an in-process one built from the opentelemetry-proto server types, where
//! Jaeger or a collector would be), each under the resource of the service it belongs to,
//! although the four services run in one process.

use shop_shared::telemetry::{TelemetryConfig, init_with};
use shop_tests::TestSystem;
use shop_tests::otlp::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_services_spans_reach_the_otlp_endpoint_under_its_own_name() {
    // Arrange: a receiver, and telemetry pointed at it the way OTEL_EXPORTER_OTLP_ENDPOINT does.
    let (receiver, addr) = OtlpReceiver::start().await;
    let guard = init_with(
        "shop-otlp-test",
        &TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}")),
            json: false,
            // The spans are exported whatever the log filter; the log lines only with TEST_LOG.
            default_filter: if std::env::var_os("TEST_LOG").is_some() {
                "info"
            } else {
                "off"
            }
            .into(),
        },
    )
    .expect("install telemetry with OTLP export");
    let system = TestSystem::start().await;

    // Act: one saga, all four services in this one process (as `shop up` runs them).
    let customer = system.customer().await;
    system.stock_up("apple", 5).await;
    let order = system.order(&customer, &[("apple", 1)]).await;
    system.settled(&order.order_id).await;
    system.notifications(&customer, 3).await;
    system.stop().await;
    // Flush: the batch exporter sends what it holds on shutdown.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();

    // Assert: the order's trace (the one that confirmed an order: the customer probe's order
    // is rejected) has the spans of each service under that service's own name.
    let spans = receiver.spans();
    let trace_id = spans
        .iter()
        .find(|span| span.name == "order.confirmed publish")
        .map(|span| span.trace_id.clone())
        .unwrap_or_else(|| panic!("no order.confirmed publish span: {spans:?}"));
    let in_trace: Vec<(&str, &str)> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .map(|span| (span.service.as_str(), span.name.as_str()))
        .collect();
    for expected in [
        ("order", "shop.order.v1.OrderService/CreateOrder"),
        ("order", "order.created publish"),
        ("inventory", "order.created process"),
        ("inventory", "inventory.reserved publish"),
        ("order", "inventory.reserved process"),
        ("order", "order.confirmed publish"),
        ("notification", "order.confirmed process"),
    ] {
        assert!(in_trace.contains(&expected), "{expected:?} in {in_trace:?}");
    }
    // A call outside any saga is its service's too.
    assert!(
        spans
            .iter()
            .any(|s| s.service == "user" && s.name == "shop.user.v1.UserService/CreateUser"),
        "{spans:?}"
    );
    assert!(
        !spans.iter().any(|s| s.service == "shop-otlp-test"),
        "every span belongs to a service: {spans:?}"
    );
}
