//! The Prometheus metrics of one service (docs/contract.md, "Metrics"), served on its HTTP
//! port at `GET /metrics` in the Prometheus text exposition format.
//!
//! Each service owns a [`Metrics`]: its own recorder, so the four services of `shop up` (one
//! process) each serve only their own series, and every series carries `service="<name>"`.
//! Names follow the OpenTelemetry semantic conventions written the Prometheus way (dots become
//! underscores, the unit and `_total` appended); shop's own instruments start with `shop_`.
//!
//! What is counted where it happens: gRPC calls (the trace layer), messages published and
//! confirmed (the relay), deliveries handled with their outcome (the consumer), connections
//! opened. What needs a query (outbox depth and age, the inbox size, dead letters) is sampled
//! in the background at a fixed interval ([`sampler`]), never on a scrape.

mod outcome;
pub mod sampler;

pub use outcome::Outcome;

use std::sync::Arc;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// The path of the metrics on every service's HTTP port.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of [`Metrics::render`] (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every gRPC call the service answered.
pub const RPC_DURATION: &str = "rpc_server_call_duration_seconds";
/// Events published and confirmed by the broker.
pub const SENT_MESSAGES: &str = "messaging_client_sent_messages_total";
/// Deliveries handled, by outcome.
pub const PROCESS_DURATION: &str = "messaging_process_duration_seconds";
/// Outbox rows staged and not yet published (parked rows not included).
pub const OUTBOX_PENDING: &str = "shop_outbox_pending_messages";
/// Age of the oldest pending outbox row.
pub const OUTBOX_OLDEST_AGE: &str = "shop_outbox_oldest_pending_age_seconds";
/// Gauge: messages staged for a later time and not yet due.
pub const OUTBOX_SCHEDULED: &str = "shop_outbox_scheduled_messages";
/// Gauge: how long the oldest due, unpublished message has been due (0 when none).
pub const OUTBOX_OVERDUE: &str = "shop_outbox_overdue_seconds";
/// Outbox rows parked after too many failed publishes.
pub const OUTBOX_DEAD: &str = "shop_outbox_dead_messages";
/// Publishes of outbox rows that failed (the row is tried again later).
pub const OUTBOX_PUBLISH_FAILURES: &str = "shop_outbox_publish_failures_total";
/// How long one relay round took (claim, publish, confirm, mark).
pub const RELAY_ROUND_DURATION: &str = "shop_outbox_relay_round_duration_seconds";
/// Messages waiting in the service's dead-letter queue.
pub const DEAD_LETTERS: &str = "shop_dead_letter_messages";
/// Broker connections opened.
pub const CONNECTIONS_OPENED: &str = "shop_amqp_connections_opened_total";
/// Deliveries per consumer batch.
pub const CONSUMER_BATCH_SIZE: &str = "shop_consumer_batch_messages";
/// Deliveries sent to a retry queue.
pub const RETRIES_SCHEDULED: &str = "shop_consumer_retries_scheduled_total";
/// Messages recorded in the inbox (PostgreSQL's live-row estimate).
pub const INBOX_MESSAGES: &str = "shop_inbox_messages";
/// Histogram: when a delivery is applied, how long ago its event was staged.
pub const CONSUMER_LAG: &str = "shop_consumer_lag_seconds";
/// Gauge: messages ready in the service's own queue (sampled).
pub const QUEUE_MESSAGES: &str = "shop_queue_messages";
/// Counter: published messages that reached no queue (returned by the broker).
pub const UNROUTABLE: &str = "shop_unroutable_messages_total";
/// Outbox rows both the fast path and the claiming relay published (the inbox absorbs them).
pub const PUBLISHED_TWICE: &str = "shop_outbox_published_twice_total";
/// The database pool's connections, by state (`idle`, `used`).
pub const DB_CONNECTIONS: &str = "db_client_connection_count";
/// The database pool's size limit.
pub const DB_CONNECTIONS_MAX: &str = "db_client_connection_max";

/// Seconds: from a fast local call to a slow saga step.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds of consumer lag: from a saga's few milliseconds to a consumer an hour behind (the
/// lag alert looks at 30 s).
const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Messages per batch or round.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// One service's instruments and the text they render to. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The instruments of `service`, every series labelled `service="<service>"`.
    pub fn new(service: &str) -> Self {
        let builder = PrometheusBuilder::new()
            .add_global_label("service", service)
            .set_buckets(DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CONSUMER_BATCH_SIZE.into()), SIZE_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(CONSUMER_LAG.into()), LAG_BUCKETS)
            });
        // The bucket lists are constants, non-empty: building cannot fail.
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            Err(_) => PrometheusBuilder::new()
                .add_global_label("service", service)
                .build_recorder(),
        };
        let handle = recorder.handle();
        let metrics = Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                recorder,
                handle,
            }),
        };
        metrics.describe();
        metrics
    }

    /// The service the instruments belong to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Runs `f` with this service's recorder behind the `metrics` macros.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    fn describe(&self) {
        self.with(|| {
            use metrics::{describe_counter, describe_gauge, describe_histogram};
            describe_histogram!(
                RPC_DURATION,
                Unit::Seconds,
                "gRPC calls answered, by service, method and status code"
            );
            describe_counter!(
                SENT_MESSAGES,
                "Events published and confirmed by the broker, by exchange and routing key"
            );
            describe_histogram!(
                PROCESS_DURATION,
                Unit::Seconds,
                "Deliveries handled, from the start of their batch to the ack, by queue, routing key and outcome"
            );
            describe_gauge!(
                OUTBOX_PENDING,
                "Outbox rows due and not yet published (sampled; scheduled rows count once due)"
            );
            describe_gauge!(
                OUTBOX_OLDEST_AGE,
                Unit::Seconds,
                "Age of the oldest pending outbox row, 0 when none (sampled)"
            );
            describe_gauge!(
                OUTBOX_DEAD,
                "Outbox rows parked after too many failed publishes (sampled)"
            );
            describe_gauge!(
                OUTBOX_SCHEDULED,
                "Messages staged for a later time and not yet due (sampled)"
            );
            describe_gauge!(
                OUTBOX_OVERDUE,
                Unit::Seconds,
                "How long the oldest due, unpublished message has been due, 0 when none (sampled)"
            );
            describe_counter!(
                OUTBOX_PUBLISH_FAILURES,
                "Outbox publishes that failed and will be tried again"
            );
            describe_histogram!(
                RELAY_ROUND_DURATION,
                Unit::Seconds,
                "Outbox relay rounds that claimed rows: claim, publish, confirm, mark"
            );
            describe_gauge!(
                DEAD_LETTERS,
                "Messages waiting in the service's dead-letter queue (sampled)"
            );
            describe_counter!(
                CONNECTIONS_OPENED,
                "Broker connections opened; a rising count means reconnects"
            );
            describe_histogram!(CONSUMER_BATCH_SIZE, "Deliveries per consumer batch");
            describe_counter!(
                RETRIES_SCHEDULED,
                "Deliveries sent to a retry queue, by routing key and retry queue"
            );
            describe_gauge!(
                INBOX_MESSAGES,
                "Messages recorded in the inbox (PostgreSQL's estimate, sampled)"
            );
            describe_gauge!(
                DB_CONNECTIONS,
                "Database pool connections by state, idle or used (sampled)"
            );
            describe_gauge!(DB_CONNECTIONS_MAX, "Database pool size limit");
            describe_histogram!(
                CONSUMER_LAG,
                Unit::Seconds,
                "When a delivery is applied, how long ago its event was staged (cloudEvents:time), by queue and routing key"
            );
            describe_gauge!(
                QUEUE_MESSAGES,
                "Messages ready in the service's own queue (sampled)"
            );
            describe_counter!(
                UNROUTABLE,
                "Published messages that reached no queue (returned by the broker), by routing key"
            );
            describe_counter!(PUBLISHED_TWICE, "Outbox rows published by both relay paths");
        });
    }

    /// A gRPC call answered: `service` the full proto service name, `code` the numeric status.
    pub fn rpc_answered(&self, service: &str, method: &str, code: i64, elapsed: Duration) {
        self.with(|| {
            metrics::histogram!(
                RPC_DURATION,
                "rpc_service" => service.to_owned(),
                "rpc_method" => method.to_owned(),
                "rpc_grpc_status_code" => code.to_string(),
            )
            .record(elapsed.as_secs_f64());
        });
    }

    /// Events published to `exchange` with `routing_key` and confirmed.
    pub fn messages_sent(&self, exchange: &str, routing_key: &str, count: u64) {
        self.with(|| {
            metrics::counter!(
                SENT_MESSAGES,
                "messaging_destination_name" => exchange.to_owned(),
                "routing_key" => routing_key.to_owned(),
            )
            .increment(count);
        });
    }

    /// Outbox publishes that failed.
    pub fn publish_failed(&self, count: u64) {
        self.with(|| metrics::counter!(OUTBOX_PUBLISH_FAILURES).increment(count));
    }

    /// Rows the fast path published that the claiming relay published too.
    pub fn published_twice(&self, count: u64) {
        self.with(|| metrics::counter!(PUBLISHED_TWICE).increment(count));
    }

    /// A relay round that claimed rows took `elapsed`.
    pub fn relay_round(&self, elapsed: Duration) {
        self.with(|| metrics::histogram!(RELAY_ROUND_DURATION).record(elapsed.as_secs_f64()));
    }

    /// A delivery from `queue` settled with `outcome`, `elapsed` after its batch started.
    pub fn delivery_settled(
        &self,
        queue: &str,
        routing_key: &str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        self.with(|| {
            metrics::histogram!(
                PROCESS_DURATION,
                "messaging_destination_name" => queue.to_owned(),
                "routing_key" => routing_key.to_owned(),
                "outcome" => outcome.as_str(),
            )
            .record(elapsed.as_secs_f64());
        });
    }

    /// A consumer batch of `size` deliveries.
    pub fn batch(&self, size: usize) {
        self.with(|| metrics::histogram!(CONSUMER_BATCH_SIZE).record(size as f64));
    }

    /// A delivery sent to `retry_queue`.
    pub fn retry_scheduled(&self, routing_key: &str, retry_queue: &str) {
        self.with(|| {
            metrics::counter!(
                RETRIES_SCHEDULED,
                "routing_key" => routing_key.to_owned(),
                "retry_queue" => retry_queue.to_owned(),
            )
            .increment(1);
        });
    }

    /// A broker connection opened.
    pub fn connection_opened(&self) {
        self.with(|| metrics::counter!(CONNECTIONS_OPENED).increment(1));
    }

    /// The sampled outbox state: pending rows, the oldest one's age, parked rows.
    pub fn outbox_sampled(&self, pending: i64, oldest_age: Duration, dead: i64) {
        self.with(|| {
            metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
            metrics::gauge!(OUTBOX_OLDEST_AGE).set(oldest_age.as_secs_f64());
            // A row is due from its creation, or from its `due_at` when scheduled: the oldest
            // pending row's age is how long it has been due.
            metrics::gauge!(OUTBOX_OVERDUE).set(oldest_age.as_secs_f64());
            metrics::gauge!(OUTBOX_DEAD).set(dead as f64);
        });
    }

    /// Shows the counter `name` at 0 before anything is counted (so a scrape or an alert sees
    /// it from the start).
    pub fn zero(&self, name: &'static str) {
        self.with(|| metrics::counter!(name).increment(0));
    }

    /// Adds one to the counter `name` (a name fixed in the code, never from input).
    pub fn count(&self, name: &'static str) {
        self.with(|| metrics::counter!(name).increment(1));
    }

    /// Adds `n` to the counter `name` with `labels` (names and values fixed in the code, never
    /// from input); `n` 0 shows the series before anything is counted.
    pub fn count_labelled(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        n: u64,
    ) {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        self.with(|| metrics::counter!(name, labels).increment(n));
    }

    /// Sets the gauge `name` (a name fixed in the code) to `value`.
    pub fn set_gauge(&self, name: &'static str, value: f64) {
        self.with(|| metrics::gauge!(name).set(value));
    }

    /// The sampled number of scheduled messages not yet due.
    pub fn schedule_sampled(&self, scheduled: i64) {
        self.with(|| metrics::gauge!(OUTBOX_SCHEDULED).set(scheduled as f64));
    }

    /// The sampled inbox size.
    pub fn inbox_sampled(&self, messages: i64) {
        self.with(|| metrics::gauge!(INBOX_MESSAGES).set(messages as f64));
    }

    /// The sampled depth of the dead-letter queue `queue`.
    pub fn dead_letters_sampled(&self, queue: &str, messages: u32) {
        self.with(|| {
            metrics::gauge!(DEAD_LETTERS, "queue" => queue.to_owned()).set(f64::from(messages));
        });
    }

    /// A delivery from `queue` applied `lag` after its event was staged.
    pub fn consumer_lag(&self, queue: &str, routing_key: &str, lag: Duration) {
        self.with(|| {
            metrics::histogram!(
                CONSUMER_LAG,
                "messaging_destination_name" => queue.to_owned(),
                "routing_key" => routing_key.to_owned(),
            )
            .record(lag.as_secs_f64());
        });
    }

    /// The sampled number of ready messages in the service's own `queue`.
    pub fn queue_sampled(&self, queue: &str, messages: u32) {
        self.with(|| {
            metrics::gauge!(QUEUE_MESSAGES, "queue" => queue.to_owned()).set(f64::from(messages));
        });
    }

    /// A published message with `routing_key` (one of the service's own events) was returned.
    pub fn unroutable(&self, routing_key: &str) {
        self.with(|| {
            metrics::counter!(UNROUTABLE, "routing_key" => routing_key.to_owned()).increment(1);
        });
    }

    /// The sampled pool state.
    pub fn pool_sampled(&self, idle: usize, used: usize, max: u32) {
        self.with(|| {
            metrics::gauge!(DB_CONNECTIONS, "db_client_connection_state" => "idle")
                .set(idle as f64);
            metrics::gauge!(DB_CONNECTIONS, "db_client_connection_state" => "used")
                .set(used as f64);
            metrics::gauge!(DB_CONNECTIONS_MAX).set(f64::from(max));
        });
    }

    /// Folds the histograms' recent samples into their buckets (the sampler calls it, so the
    /// samples do not pile up while nobody scrapes).
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Every series in the Prometheus text format.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// The `GET /metrics` route, to merge into the service's HTTP router.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            METRICS_PATH,
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        metrics.render(),
                    )
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests;
