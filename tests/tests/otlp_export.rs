//! The real export path: with an OTLP endpoint configured, spans of a flow reach an OTLP/gRPC
//! receiver (here an in-process one built from the opentelemetry-proto server types, where
//! Jaeger or a collector would be) with the service name as the resource.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use shop_proto::user::v1::CreateUserRequest;
use shop_shared::telemetry::{TelemetryConfig, init_with};
use shop_tests::TestSystem;

#[derive(Debug, Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// `(service.name, span name)` of everything received.
    fn spans(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push((service.clone(), span.name.clone()));
                    }
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_flow_reach_the_configured_otlp_endpoint() {
    // Arrange: a receiver, and telemetry pointed at it the way OTEL_EXPORTER_OTLP_ENDPOINT does.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let guard = init_with(
        "shop-otlp-test",
        &TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}")),
            json: false,
            default_filter: "info".into(),
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
            .any(|(service, span)| service == "shop-otlp-test" && span == name)
    };
    assert!(has("shop.user.v1.UserService/CreateUser"), "{spans:?}");
    assert!(has("user.created publish"), "{spans:?}");
}
