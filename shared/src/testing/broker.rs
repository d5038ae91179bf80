//! A random broker prefix per test (its queues and exchange deleted with its guard), and events
//! published or placed in a queue as a service or the broker would.

use lapin::Connection;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use shop_proto::Event;

use crate::messaging::{Names, RetryPolicy, connection, topology};

/// The broker tests use: `AMQP_URL` or the local default.
pub fn amqp_url() -> String {
    crate::config::env_var("AMQP_URL").unwrap_or_else(|| crate::config::DEFAULT_AMQP_URL.into())
}

/// A random broker prefix for one test; its exchange and the queues it registered are
/// deleted when the guard drops.
#[derive(Debug)]
pub struct TestBroker {
    /// The broker URL.
    pub url: String,
    /// Names under this test's prefix.
    pub names: Names,
    queues: std::sync::Mutex<Vec<String>>,
}

impl TestBroker {
    /// A fresh prefix like `t3f9a…_`.
    pub fn new() -> Self {
        let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            url: amqp_url(),
            names: Names::new(prefix),
            queues: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A fresh prefix on the broker at `url` (one URL or a cluster's nodes, comma-separated)
    /// instead of `AMQP_URL`.
    pub fn with_url(url: impl Into<String>) -> Self {
        let mut broker = Self::new();
        broker.url = url.into();
        broker
    }

    /// Remembers `service`'s queues (main, DLQ, retry queues of `retry`) for the cleanup.
    pub fn track_service(&self, service: &str, retry: &RetryPolicy) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.push(self.names.queue(service));
        queues.push(self.names.dlq(service));
        for delay in retry.delays() {
            queues.push(self.names.retry_queue(service, delay));
        }
    }

    /// Remembers a queue a test (or a process it started) declared, for the cleanup.
    pub fn track_queue(&self, queue: impl Into<String>) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(queue.into());
    }

    /// Opens a connection named with this test's prefix.
    pub async fn connect(&self, role: &str) -> Connection {
        let name = self.names.connection_name("test", role);
        connection::connect(&self.url, &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to RabbitMQ at {}: {e} (set AMQP_URL)",
                    self.url
                )
            })
    }

    /// The routing keys `queue` is bound with on the test's exchange (`rabbitmqctl
    /// list_bindings`), sorted.
    pub fn bindings_of(&self, queue: &str) -> Vec<String> {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_bindings",
                "-q",
                "--no-table-headers",
                "source_name",
                "destination_name",
                "routing_key",
            ])
            .output()
            .expect("run rabbitmqctl list_bindings");
        let exchange = self.names.exchange();
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut columns = line.split('\t');
                let (source, destination, key) =
                    (columns.next()?, columns.next()?, columns.next()?);
                (source == exchange && destination == queue).then(|| key.to_owned())
            })
            .collect();
        keys.sort();
        keys
    }

    /// Closes, from the broker's side, every connection whose name carries this test's
    /// prefix (never anyone else's: tests run in parallel). Returns how many were closed.
    pub fn close_own_connections(&self) -> usize {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("run rabbitmqctl list_connections");
        let listing = String::from_utf8_lossy(&out.stdout);
        let mut closed = 0;
        for line in listing.lines() {
            if !line.contains(&format!("\"{}", self.names.prefix)) {
                continue;
            }
            let Some(pid) = line.split_whitespace().next() else {
                continue;
            };
            let status = std::process::Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a test"])
                .status()
                .expect("run rabbitmqctl close_connection");
            if status.success() {
                closed += 1;
            }
        }
        closed
    }
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let url = self.url.clone();
        let exchange = self.names.exchange();
        let mut queues =
            std::mem::take(&mut *self.queues.lock().unwrap_or_else(|p| p.into_inner()));
        // Every service declares every consumer's queue: they are this prefix's too.
        for consumer in crate::messaging::topology::CONSUMERS {
            queues.push(self.names.queue(consumer.service));
            queues.push(self.names.dlq(consumer.service));
        }
        queues.sort_unstable();
        queues.dedup();
        let name = self.names.connection_name("test", "cleanup");
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(conn) = connection::connect(&url, &name).await else {
                    return;
                };
                if let Ok(channel) = conn.create_channel().await {
                    for queue in &queues {
                        let _ = channel
                            .queue_delete(queue, QueueDeleteOptions::default())
                            .await;
                    }
                    let _ = channel
                        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                        .await;
                    let _ = channel.close(200, "cleanup").await;
                }
                let _ = conn.close(200, "cleanup").await;
            });
        })
        .join();
    }
}

/// Publishes `event` on the test's exchange as a service would (every contract property,
/// confirmed by the broker). Returns its message id.
pub async fn publish<E: Event>(broker: &TestBroker, event: &E) -> String {
    let envelope =
        crate::messaging::Envelope::new(event, "test", &crate::messaging::EventContext::new_flow());
    publish_envelope(broker, &envelope).await;
    envelope.message_id.to_string()
}

/// Publishes a prepared envelope on the test's exchange, confirmed by the broker.
pub async fn publish_envelope(broker: &TestBroker, envelope: &crate::messaging::Envelope) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("publisher").await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    topology::declare_exchange(&channel, &broker.names)
        .await
        .expect("declare the exchange");
    let confirm = channel
        .basic_publish(
            &broker.names.exchange(),
            &envelope.routing_key,
            BasicPublishOptions::default(),
            &envelope.payload,
            envelope.properties(chrono::Utc::now().timestamp().max(0) as u64),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker confirmed the test event");
    let _ = conn.close(200, "published").await;
}

/// Places `envelope` in `service`'s dead-letter queue as the consumer dead-letters a message
/// (the copy of the original with `x-death-reason`, `x-death-time`, `x-retry-count` and
/// `x-original-routing-key`), plus `extra` headers, confirmed by the broker.
pub async fn place_dead_letter(
    broker: &TestBroker,
    service: &str,
    envelope: &crate::messaging::Envelope,
    reason: &str,
    extra: &[(&'static str, lapin::types::AMQPValue)],
) {
    use crate::messaging::envelope as e;
    place_in_queue(
        broker,
        &broker.names.dlq(service),
        &envelope.payload,
        e::with_headers(
            &envelope.properties(chrono::Utc::now().timestamp().max(0) as u64),
            [
                (e::DEATH_REASON, e::long_string(reason)),
                (e::DEATH_TIME, e::long_string(&e::rfc3339_now())),
                (e::RETRY_COUNT, lapin::types::AMQPValue::LongInt(5)),
                (
                    e::ORIGINAL_ROUTING_KEY,
                    e::long_string(&envelope.routing_key),
                ),
            ]
            .into_iter()
            .chain(extra.iter().cloned()),
        ),
    )
    .await;
}

/// Publishes `body` with `properties` straight to `queue` (default exchange), confirmed.
pub async fn place_in_queue(
    broker: &TestBroker,
    queue: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("placer").await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            properties.with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirm, lapin::publisher_confirm::Confirmation::Ack(None)),
        "the broker routed the message to {queue}: {confirm:?}"
    );
    let _ = conn.close(200, "placed").await;
}
