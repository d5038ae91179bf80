//! One `service.name` per service in exported traces, also when one process runs several
//! services (`shop up` runs all four): a span exporter that sends each span under the resource
//! of the service it belongs to, so Jaeger draws the boundaries between `order`,
//! `inventory` and `notification` inside one trace.
//!
//! Every span shop exports (`grpc.server`, `amqp.publish`, `amqp.process`) carries the
//! `shop.service` attribute; [`PerServiceExporter`] groups a batch by it and hands each group
//! to an exporter of its own whose resource is the process's with `service.name` replaced.
//! A span without the attribute, or naming no known service, keeps the process's resource.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// The span attribute naming the service a span belongs to.
pub const SERVICE_ATTRIBUTE: &str = "shop.service";

/// The services that get a resource of their own.
pub const SERVICES: [&str; 4] = ["user", "order", "inventory", "notification"];

/// See the module documentation.
#[derive(Debug)]
pub struct PerServiceExporter<E> {
    /// For spans of no known service: the process's resource.
    process: E,
    /// One exporter per service in [`SERVICES`], in that order.
    services: Vec<E>,
}

impl<E: SpanExporter> PerServiceExporter<E> {
    /// Builds one exporter for the process and one per service with `make`.
    pub fn new<X>(mut make: impl FnMut() -> Result<E, X>) -> Result<Self, X> {
        let process = make()?;
        let services = SERVICES
            .iter()
            .map(|_| make())
            .collect::<Result<Vec<_>, X>>()?;
        Ok(Self { process, services })
    }

    /// The exporter for a span: its service's, or the process's.
    fn index_of(span: &SpanData) -> Option<usize> {
        let value = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == SERVICE_ATTRIBUTE)?
            .value
            .as_str();
        SERVICES.iter().position(|s| *s == value)
    }

    fn all(&mut self) -> impl Iterator<Item = &mut E> {
        std::iter::once(&mut self.process).chain(self.services.iter_mut())
    }
}

/// The first error of several results, or `Ok`.
fn first_error(results: impl IntoIterator<Item = OTelSdkResult>) -> OTelSdkResult {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

impl<E: SpanExporter> SpanExporter for PerServiceExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut process = Vec::new();
        let mut services: Vec<Vec<SpanData>> = SERVICES.iter().map(|_| Vec::new()).collect();
        for span in batch {
            match Self::index_of(&span) {
                Some(i) => services[i].push(span),
                None => process.push(span),
            }
        }
        let exports: Vec<_> = std::iter::once((&self.process, process))
            .chain(self.services.iter().zip(services))
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(exporter, spans)| exporter.export(spans))
            .collect();
        async move { first_error(futures::future::join_all(exports).await) }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        let results: Vec<_> = self
            .all()
            .map(|e| e.shutdown_with_timeout(timeout))
            .collect();
        first_error(results)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        let results: Vec<_> = self.all().map(|e| e.force_flush()).collect();
        first_error(results)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.process.set_resource(resource);
        for (service, exporter) in SERVICES.iter().zip(self.services.iter_mut()) {
            let own = Resource::builder_empty()
                .with_attributes(
                    resource
                        .iter()
                        .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
                )
                .with_service_name(*service)
                .build();
            exporter.set_resource(&own);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    /// Keeps the names of the spans it exported.
    #[derive(Debug, Clone, Default)]
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl SpanExporter for Recording {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0
                .lock()
                .expect("not poisoned")
                .extend(batch.into_iter().map(|s| s.name.into_owned()));
            async { Ok(()) }
        }
    }

    fn span(name: &'static str, service: Option<&'static str>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(1),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: service
                .map(|s| KeyValue::new(SERVICE_ATTRIBUTE, s))
                .into_iter()
                .collect(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[tokio::test]
    async fn each_span_goes_to_its_services_exporter() {
        let memories: Vec<Recording> = (0..=SERVICES.len()).map(|_| Recording::default()).collect();
        let mut next = memories.iter().cloned();
        let exporter =
            PerServiceExporter::new(|| next.next().ok_or("no more")).expect("five exporters");
        exporter
            .export(vec![
                span("a", Some("order")),
                span("b", Some("inventory")),
                span("c", None),
                span("d", Some("elsewhere")),
                span("e", Some("order")),
            ])
            .await
            .expect("exported");
        let names = |i: usize| memories[i].0.lock().expect("not poisoned").clone();
        assert_eq!(names(0), ["c", "d"], "the process's");
        assert_eq!(names(1), Vec::<String>::new(), "user's");
        assert_eq!(names(2), ["a", "e"], "order's");
        assert_eq!(names(3), ["b"], "inventory's");
    }
}
