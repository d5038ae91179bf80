//! One trace per business flow: a CreateOrder through the happy saga yields spans of the
//! order, inventory and notification services that share one trace id, linked
//! server → producer → consumer → producer → … by parent ids. Spans are collected by an
//! in-memory exporter installed through the same telemetry setup the binaries use.

use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use shop_proto::order::v1::{Order, OrderStatus};
use shop_shared::testing::eventually;
use shop_tests::{TestSystem, WAIT, order_request};

fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let guard = shop_shared::telemetry::init_with_exporter("shop-test", exporter.clone())
            .expect("install telemetry");
        // Lives as long as the test binary.
        std::mem::forget(guard);
        exporter
    })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .expect("read the exported spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// The span of `trace` named `name`, of kind `kind`, in `service`, whose parent is `parent`.
fn find(
    spans: &[SpanData],
    name: &str,
    kind: SpanKind,
    service: &str,
    parent: SpanId,
) -> Option<SpanData> {
    spans
        .iter()
        .find(|s| {
            s.name == name
                && s.span_kind == kind
                && attr(s, "shop.service").as_deref() == Some(service)
                && s.parent_span_id == parent
        })
        .cloned()
}

/// The exporter installed, the system started, a customer, and stock of "traced".
async fn traced_system() -> (TestSystem, String) {
    exporter();
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("traced", 5).await;
    (system, customer)
}

/// Places an order of one "traced" unit with no trace context, only `correlation_id`.
async fn order_in_flow(system: &TestSystem, customer: &str, correlation_id: &str) -> Order {
    let mut request = tonic::Request::new(order_request(customer, &[("traced", 1)]));
    request
        .metadata_mut()
        .insert("x-correlation-id", correlation_id.parse().unwrap());
    system
        .clients
        .order
        .clone()
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap()
}

/// Waits for the whole chain under `root_parent` in `trace` and checks every link.
async fn assert_saga_chain(trace: TraceId, root_parent: SpanId) -> Vec<SpanData> {
    let chain = eventually(WAIT, "the whole span chain of the saga", || async {
        let spans = spans_of(trace);
        let server = find(
            &spans,
            "shop.order.v1.OrderService/CreateOrder",
            SpanKind::Server,
            "order",
            root_parent,
        )?;
        let created = find(
            &spans,
            "order.created publish",
            SpanKind::Producer,
            "order",
            server.span_context.span_id(),
        )?;
        let reserve = find(
            &spans,
            "order.created process",
            SpanKind::Consumer,
            "inventory",
            created.span_context.span_id(),
        )?;
        let reserved = find(
            &spans,
            "inventory.reserved publish",
            SpanKind::Producer,
            "inventory",
            reserve.span_context.span_id(),
        )?;
        let confirm = find(
            &spans,
            "inventory.reserved process",
            SpanKind::Consumer,
            "order",
            reserved.span_context.span_id(),
        )?;
        let confirmed = find(
            &spans,
            "order.confirmed publish",
            SpanKind::Producer,
            "order",
            confirm.span_context.span_id(),
        )?;
        let notify = find(
            &spans,
            "order.confirmed process",
            SpanKind::Consumer,
            "notification",
            confirmed.span_context.span_id(),
        )?;
        Some(vec![
            server, created, reserve, reserved, confirm, confirmed, notify,
        ])
    })
    .await;
    // The conventions' attributes.
    assert_eq!(attr(&chain[0], "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(&chain[0], "rpc.service").as_deref(),
        Some("shop.order.v1.OrderService")
    );
    assert_eq!(
        attr(&chain[0], "rpc.method").as_deref(),
        Some("CreateOrder")
    );
    assert_eq!(
        attr(&chain[0], "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    for span in &chain[1..] {
        assert_eq!(
            attr(span, "messaging.system").as_deref(),
            Some("rabbitmq"),
            "{}",
            span.name
        );
        assert!(
            attr(span, "messaging.message.id").is_some(),
            "{}",
            span.name
        );
        assert!(attr(span, "messaging.rabbitmq.destination.routing_key").is_some());
    }
    chain
}

#[tokio::test]
async fn one_create_order_is_one_trace_across_order_inventory_and_notification() {
    // Arrange
    let (system, customer) = traced_system().await;
    let correlation_id = format!("flow-{}", uuid::Uuid::new_v4().simple());

    // Act: a call with no trace context, only a correlation id.
    let order = order_in_flow(&system, &customer, &correlation_id).await;
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );

    // Assert: the server span started a new trace (no parent) …
    let server = eventually(WAIT, "the CreateOrder server span", || async {
        exporter()
            .get_finished_spans()
            .ok()?
            .into_iter()
            .find(|s| attr(s, "correlation_id").as_deref() == Some(correlation_id.as_str()))
    })
    .await;
    assert_eq!(server.parent_span_id, SpanId::INVALID, "a new trace");
    // … and every hop of the saga continued it.
    let chain = assert_saga_chain(server.span_context.trace_id(), SpanId::INVALID).await;
    for span in &chain[1..] {
        assert_eq!(
            attr(span, "messaging.message.conversation_id").as_deref(),
            Some(correlation_id.as_str()),
            "the correlation id rides along ({})",
            span.name
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn a_caller_supplied_traceparent_is_honoured() {
    // Arrange
    let (system, customer) = traced_system().await;
    let trace_hex = uuid::Uuid::new_v4().simple().to_string();
    let parent_hex = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{trace_hex}-{parent_hex}-01");

    // Act
    let mut request = tonic::Request::new(order_request(&customer, &[("traced", 1)]));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    let order = system
        .clients
        .order
        .clone()
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );

    // Assert: the flow's trace id is the caller's, the server span's parent the caller's span.
    let trace = TraceId::from_hex(&trace_hex).unwrap();
    let parent = SpanId::from_hex(parent_hex).unwrap();
    assert_saga_chain(trace, parent).await;
    system.stop().await;
}

#[tokio::test]
async fn a_consumer_span_ends_when_its_transaction_commits_not_when_its_handler_returns() {
    use sqlx::Connection as _;
    // Arrange: the inventory's outbox locked against inserts, so the consumer's transaction
    // waits at its last statement (staging the answer), after its handler has returned.
    let (system, customer) = traced_system().await;
    let inventory_db = &system.databases[2];
    let mut blocker = sqlx::PgConnection::connect(&inventory_db.url)
        .await
        .unwrap();
    let watcher = sqlx::PgPool::connect(&inventory_db.url).await.unwrap();
    // `customer()` placed a probe order; the inventory answers it before the lock is taken.
    eventually(WAIT, "the inventory's answer to the probe order", || {
        let watcher = watcher.clone();
        async move {
            let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&watcher)
                .await
                .ok()?;
            (staged > 0).then_some(())
        }
    })
    .await;
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();

    // Act: an order; once the inventory's transaction that applies it (begun after the call)
    // waits for the lock, release it.
    let called: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&watcher)
        .await
        .unwrap();
    let correlation_id = format!("flow-{}", uuid::Uuid::new_v4().simple());
    let order = order_in_flow(&system, &customer, &correlation_id).await;
    eventually(
        WAIT,
        "the inventory's transaction waiting to stage its answer",
        || {
            let watcher = watcher.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                   AND query LIKE 'INSERT INTO outbox%' AND xact_start > $1",
                )
                .bind(called)
                .fetch_one(&watcher)
                .await
                .ok()?;
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    let released = std::time::SystemTime::now();
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    assert_eq!(
        system.settled(&order.order_id).await.status,
        OrderStatus::Confirmed as i32
    );

    // Assert: the inventory's process span ended after the lock was released (its commit),
    // not when its handler returned (before the lock).
    let process = eventually(WAIT, "the inventory's process span", || async {
        exporter().get_finished_spans().ok()?.into_iter().find(|s| {
            s.name == "order.created process"
                && attr(s, "shop.service").as_deref() == Some("inventory")
                && attr(s, "messaging.message.conversation_id").as_deref()
                    == Some(correlation_id.as_str())
        })
    })
    .await;
    assert!(
        process.end_time >= released,
        "the process span ended {:?} before the transaction could commit",
        released
            .duration_since(process.end_time)
            .unwrap_or_default()
    );
    watcher.close().await;
    system.stop().await;
}
