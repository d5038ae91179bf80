//! What every gRPC server of shop has in common: health and reflection, request limits, and
//! reading the flow's correlation id from request metadata.

pub use crate::telemetry::propagation::{
    CORRELATION_ID, correlation_id, correlation_id_from_headers,
};
use tonic::Request;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::messaging::EventContext;
use crate::telemetry::propagation::TraceFields;

/// The largest request a service decodes (1 MiB); CreateOrder with 100 items needs a few KiB.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Health and reflection (v1 and v1alpha, so grpcurl 1.8 works with no proto files), built
/// from the contracts' descriptor set.
#[derive(Debug)]
pub struct StandardServices<H, R1, R2> {
    /// Flips a service between SERVING and NOT_SERVING.
    pub reporter: HealthReporter,
    /// `grpc.health.v1.Health`.
    pub health: H,
    /// `grpc.reflection.v1.ServerReflection`.
    pub reflection_v1: R1,
    /// `grpc.reflection.v1alpha.ServerReflection`.
    pub reflection_v1alpha: R2,
}

/// Builds health and both reflections for the service named `service` (e.g.
/// `shop.order.v1.OrderService`). Reflection lists exactly what the server serves: that
/// service, health, and the two reflection services, with their full schemas.
pub fn standard_services(
    descriptor_set: &'static [u8],
    service: &str,
) -> anyhow::Result<
    StandardServices<
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
        >,
        tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
            impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
        >,
    >,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            // Both reflection versions describe both, so a v1alpha client (grpcurl 1.8)
            // lists the v1 service too.
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    Ok(StandardServices {
        reporter,
        health,
        reflection_v1,
        reflection_v1alpha,
    })
}

/// The context for events a request causes: the call's correlation id (the server layer
/// mints one when the caller sent none), its authenticated caller (the flow's actor, sent as
/// `x-actor-id`), and the trace context of the current span (the call's server span), so the
/// outbox relay continues this trace.
pub fn event_context<T>(request: &Request<T>) -> EventContext {
    let mut context = match correlation_id(request.metadata()) {
        Some(id) => EventContext::with_correlation_id(id),
        None => EventContext::new_flow(),
    };
    context.actor_id = request
        .extensions()
        .get::<crate::auth::Caller>()
        .map(|caller| caller.user_id.to_string());
    let trace = TraceFields::current();
    context.traceparent = trace.traceparent;
    context.tracestate = trace.tracestate;
    context
}

/// A client interceptor that sends the current span's trace context and, when given, a
/// correlation id: what every gRPC client of the system uses.
#[derive(Debug, Clone, Default)]
pub struct TraceInterceptor {
    /// Sent as `x-correlation-id` when set.
    pub correlation_id: Option<String>,
}

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        let cx = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(
                &cx,
                &mut crate::telemetry::propagation::HeaderInjector(request.metadata_mut().as_mut()),
            )
        });
        if let Some(id) = &self.correlation_id
            && let Ok(value) = id.parse()
        {
            request.metadata_mut().insert(CORRELATION_ID, value);
        }
        Ok(request)
    }
}

/// The layers of [`server`], outermost last.
pub type ServerLayers = Stack<
    crate::auth::AuthLayer,
    Stack<
        crate::telemetry::grpc_layer::GrpcTraceLayer,
        Stack<crate::grpc_drain::DrainLayer, Identity>,
    >,
>;

/// The server builder every service uses, so limits and layers are the same everywhere: the
/// drain outermost (open streams end when the shutdown's drain is over), then the trace layer
/// (so a refused call still has its server span and is counted in `metrics`), then `auth`.
pub fn server(
    auth: crate::auth::AuthLayer,
    metrics: crate::metrics::Metrics,
    drained: tokio_util::sync::CancellationToken,
) -> tonic::transport::Server<ServerLayers> {
    tonic::transport::Server::builder()
        .layer(crate::grpc_drain::DrainLayer::new(drained))
        .layer(crate::telemetry::grpc_layer::GrpcTraceLayer::new(metrics))
        .layer(auth)
        // Bounds how long a client may keep a connection idle-open without pings.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .tcp_nodelay(true)
}

/// The services' gRPC packages and their default ports, to tell a caller on the wrong port
/// where to go.
const DEFAULT_PORTS: [(&str, &str, u16); 4] = [
    ("shop.user.", "user", 50051),
    ("shop.order.", "order", 50052),
    ("shop.inventory.", "inventory", 50053),
    ("shop.notification.", "notification", 50054),
];

/// What a call to a service this server does not serve is told: which service this is, and
/// which service (and default port) serves the one asked for.
pub fn wrong_port_message(path: &str, service: &str, served: &str) -> String {
    let asked = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let here = format!("this is the {service} service, serving {served}");
    match DEFAULT_PORTS
        .iter()
        .find(|(package, ..)| asked.starts_with(package))
    {
        Some((_, owner, port)) if *owner != service => format!(
            "{asked} is not served here ({here}): it is the {owner} service's, on port {port} by default ({}_GRPC_ADDR)",
            owner.to_uppercase()
        ),
        _ => format!("{asked} is not served here ({here})"),
    }
}

/// Replaces tonic's empty UNIMPLEMENTED for an unknown service or method with
/// [`wrong_port_message`].
pub fn explain_unknown_services(
    routes: &mut tonic::service::Routes,
    service: &'static str,
    served: &'static str,
) {
    let router = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = router.fallback(move |uri: http::Uri| async move {
        let status = tonic::Status::unimplemented(wrong_port_message(uri.path(), service, served));
        let (parts, ()) = status.into_http::<()>().into_parts();
        http::Response::from_parts(parts, axum::body::Body::empty())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_on_the_wrong_port_is_told_where_to_go() {
        assert_eq!(
            wrong_port_message(
                "/shop.order.v1.OrderService/CreateOrder",
                "user",
                "shop.user.v1.UserService"
            ),
            "shop.order.v1.OrderService is not served here (this is the user service, serving shop.user.v1.UserService): it is the order service's, on port 50052 by default (ORDER_GRPC_ADDR)"
        );
        assert_eq!(
            wrong_port_message("/no.Such/Method", "user", "shop.user.v1.UserService"),
            "no.Such is not served here (this is the user service, serving shop.user.v1.UserService)"
        );
    }

    #[test]
    fn the_descriptor_set_builds_both_reflections() {
        assert!(
            standard_services(
                shop_proto::FILE_DESCRIPTOR_SET,
                "shop.order.v1.OrderService"
            )
            .is_ok()
        );
    }

    #[test]
    fn correlation_id_comes_from_metadata_or_is_minted() {
        let mut request = Request::new(());
        assert!(!event_context(&request).correlation_id.is_empty());
        request
            .metadata_mut()
            .insert(CORRELATION_ID, "flow-7".parse().unwrap());
        assert_eq!(event_context(&request).correlation_id, "flow-7");
    }
}
