//! The real export path: with an OTLP endpoint configured, spans of a flow reach an OTLP/gRPC
//! receiver (here an in-process one built from the opentelemetry-proto server types, where
//! Jaeger or a collector would be) with the service name as the resource.

use shop_proto::user::v1::CreateUserRequest;
use shop_shared::telemetry::{TelemetryConfig, init_with};
use shop_tests::TestSystem;
use shop_tests::otlp::OtlpReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_flow_reach_the_configured_otlp_endpoint() {
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

    // Act: one call that publishes an event.
    let user = system
        .clients
        .user
        .clone()
        .create_user(CreateUserRequest {
            email: "otlp@example.com".into(),
            name: "Otto".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    // Published and consumed: the order service knows the customer.
    system.wait_until_customer_known(&user.user_id).await;
    system.stop().await;
    // Flush: the batch exporter sends what it holds on shutdown.
    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();

    // Assert
    let spans = receiver.spans();
    let has = |name: &str| {
        spans
            .iter()
            .any(|span| span.service == "shop-otlp-test" && span.name == name)
    };
    assert!(has("shop.user.v1.UserService/CreateUser"), "{spans:?}");
    assert!(has("user.created publish"), "{spans:?}");
}
