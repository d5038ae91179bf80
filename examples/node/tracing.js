// OpenTelemetry for the Node.js example: W3C trace context, and OTLP export when configured.
//
// Spans are exported over OTLP/gRPC only when OTEL_EXPORTER_OTLP_ENDPOINT is set (Jaeger's
// 4317, say); otherwise they are still created, so trace ids can be printed, but go nowhere.
import { propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

/** Installs a tracer provider named by OTEL_SERVICE_NAME (or the default) and returns it;
 * `await provider.shutdown()` before exiting flushes the buffered spans. */
export function initTracing(defaultServiceName) {
  const serviceName = process.env.OTEL_SERVICE_NAME || defaultServiceName;
  const spanProcessors = process.env.OTEL_EXPORTER_OTLP_ENDPOINT
    ? [new BatchSpanProcessor(new OTLPTraceExporter())]
    : [];
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": serviceName }),
    spanProcessors,
  });
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return provider;
}
