"""OpenTelemetry for the examples: W3C trace context, and OTLP export when configured.

Spans are exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT is set (Jaeger's
4317, say); otherwise they are still created, so trace ids can be printed, but go nowhere.
"""

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()


def init(default_service_name: str) -> TracerProvider:
    """Installs a tracer provider named by OTEL_SERVICE_NAME (or the default) and returns it;
    call `shutdown()` on it before exiting so buffered spans are flushed."""
    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://")))
        )
    trace.set_tracer_provider(provider)
    return provider


def trace_id_hex(span) -> str:
    """The span's trace id as the 32 hex digits a traceparent and Jaeger show."""
    return format(span.get_span_context().trace_id, "032x")
