//! Logs and traces, set up the same way by every binary: one call, one guard.
//!
//! - `tracing` with an `EnvFilter` (`RUST_LOG`, default `info`), pretty logs or JSON
//!   (`LOG_FORMAT=json`). The spans that start a unit of work (a gRPC call, a consumed
//!   message) carry `trace_id` and `correlation_id`, so every log line inside them does too.
//! - OpenTelemetry: a tracer provider with the W3C trace-context propagator; `tracing` spans
//!   become OpenTelemetry spans. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported by
//!   OTLP/gRPC in batches (Jaeger accepts OTLP on 4317); without it nothing is exported, but
//!   trace context is still propagated, so a flow keeps one trace id across services. Each
//!   span is exported under the resource of the service it belongs to ([`per_service`]), so
//!   the four services of `shop up` are four services in Jaeger, not one.
//! - [`TelemetryGuard`] flushes and shuts the provider down when dropped.
//!
//! Trace context crosses process boundaries through the two adapters in [`propagation`]:
//! gRPC metadata (HTTP headers) and AMQP headers.

pub mod grpc_layer;
pub mod per_service;
pub mod propagation;
pub mod w3c;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// What the environment says about telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://localhost:4317`; `None`: export nothing.
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT=json`: one JSON object per log line.
    pub json: bool,
    /// The log filter when `RUST_LOG` is unset (`info`).
    pub default_filter: String,
}

impl TelemetryConfig {
    /// Reads `OTEL_EXPORTER_OTLP_ENDPOINT` and `LOG_FORMAT`.
    pub fn from_env() -> Self {
        use crate::config::{Fallback, Source, setting};
        let source = Source::Environment;
        let default_filter = match setting("RUST_LOG").default {
            Fallback::Value(filter) => filter,
            Fallback::Unset(_) | Fallback::Computed(_) => "info",
        };
        Self {
            otlp_endpoint: source.var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            json: source
                .var("LOG_FORMAT")
                .is_some_and(|f| f.eq_ignore_ascii_case("json")),
            default_filter: default_filter.into(),
        }
    }
}

/// Flushes and shuts down the tracer provider when dropped (at the end of `main`).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporter (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs logging and tracing for `service` from the environment. Call it inside the
/// tokio runtime (the OTLP exporter's gRPC client runs on it).
pub fn init(service: &str) -> anyhow::Result<TelemetryGuard> {
    init_with(service, &TelemetryConfig::from_env())
}

/// [`init`] with explicit settings.
pub fn init_with(service: &str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    init_extended(service, config, |builder| builder)
}

/// As [`init_with`], with one more span processor beside the exporter: `shop bench` collects
/// the spans of its orders in-process to tell where their time goes.
pub fn init_with_processor<P: opentelemetry_sdk::trace::SpanProcessor + 'static>(
    service: &str,
    config: &TelemetryConfig,
    processor: P,
) -> anyhow::Result<TelemetryGuard> {
    init_extended(service, config, |builder| {
        builder.with_span_processor(processor)
    })
}

fn init_extended(
    service: &str,
    config: &TelemetryConfig,
    extend: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> anyhow::Result<TelemetryGuard> {
    let mut builder = extend(SdkTracerProvider::builder().with_resource(resource(service)));
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = per_service::PerServiceExporter::new(|| {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
        })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let output = if config.json {
        LogOutput::Json
    } else {
        LogOutput::Pretty
    };
    install(builder.build(), output, &config.default_filter)
}

/// Installs logging and tracing with spans going to `exporter` as soon as they end (tests:
/// an in-memory exporter). Logs go to the test harness' captured output.
pub fn init_with_exporter<E: SpanExporter + 'static>(
    service: &str,
    exporter: E,
) -> anyhow::Result<TelemetryGuard> {
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_simple_exporter(exporter)
        .build();
    install(provider, LogOutput::TestWriter, "info")
}

fn resource(service: &str) -> Resource {
    Resource::builder()
        .with_service_name(service.to_owned())
        .build()
}

/// Where and how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogOutput {
    Pretty,
    Json,
    TestWriter,
}

fn install(
    provider: SdkTracerProvider,
    output: LogOutput,
    default_filter: &str,
) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(w3c::LenientTraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("shop");
    // RUST_LOG filters the log lines only. The spans that carry the trace context (RPC,
    // publish, process: all INFO) always reach OpenTelemetry, so `RUST_LOG=warn` or `off`
    // quietens the logs without breaking the trace of a flow.
    // PostgreSQL's NOTICEs ("relation _sqlx_migrations already exists, skipping" at every
    // start) are not news: only warnings and up of them, unless RUST_LOG says otherwise.
    // lapin logs every broker failure at ERROR from its I/O thread, and shop reports the
    // same failure once itself (the start-up error, or a session's "reconnecting" warning):
    // lapin's own lines only when RUST_LOG asks for them.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_filter},sqlx::postgres::notice=warn,lapin=off"
        ))
    });
    // Colour codes only for a terminal, and never with NO_COLOR set (https://no-color.org).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    // lapin runs each connection's I/O loop in an INFO span of its own: not part of any flow,
    // and in Jaeger only noise without a service.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("lapin", LevelFilter::OFF),
        );
    let registry = tracing_subscriber::registry().with(otel);
    match output {
        // Logs go to stderr: stdout stays clean for what a command prints (`shop bench --json`).
        LogOutput::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
        LogOutput::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init()?,
        LogOutput::TestWriter => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}
