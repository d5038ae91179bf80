use std::collections::HashSet;
use std::time::Duration;

use shop_proto::Event as _;
use shop_proto::order::v1::OrderCreated;
use shop_shared::messaging::envelope::{CAUSATION_ID, TRACEPARENT};
use shop_shared::messaging::{Envelope, EventContext, Link, Relay, RelayConfig, outbox};
use shop_shared::testing::{EventProbe, eventually, metric};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Harness, SilentProxy, WAIT, fast_config, order};

#[tokio::test]
async fn staged_event_is_published_once_with_every_header() {
    // Arrange
    let mut h = Harness::idle(fast_config()).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    h.spawn_relay();
    let context = EventContext {
        correlation_id: "corr-42".into(),
        causation_id: Some("cause-42".into()),
        actor_id: Some("0190f5a0-0000-7000-8000-0000000000ac".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        tracestate: Some("vendor=1".into()),
    };

    // Act
    let mut tx = h.pool.begin().await.unwrap();
    let message_id = outbox::stage(&mut tx, &order("o-42"), &context)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Assert
    let received = probe.expect(WAIT, "the staged OrderCreated").await;
    let p = &received.properties;
    assert_eq!(received.routing_key, OrderCreated::ROUTING_KEY);
    assert_eq!(
        p.message_id().as_ref().unwrap().as_str(),
        message_id.to_string()
    );
    assert_eq!(
        p.kind().as_ref().unwrap().as_str(),
        "shop.order.v1.OrderCreated"
    );
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/x-protobuf"
    );
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    assert!(p.timestamp().is_some());
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "test");
    assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "corr-42");
    assert_eq!(received.header(CAUSATION_ID).as_deref(), Some("cause-42"));
    assert_eq!(
        received.header("x-actor-id").as_deref(),
        Some("0190f5a0-0000-7000-8000-0000000000ac"),
        "the outbox row's actor goes out as x-actor-id"
    );
    // The relay publishes in a producer span of the staged trace: same trace id.
    let traceparent = received.header(TRACEPARENT).expect("a traceparent header");
    assert_eq!(
        traceparent[..35],
        context.traceparent.as_ref().unwrap()[..35]
    );
    assert_eq!(received.header("tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(received.decode::<OrderCreated>(), order("o-42"));
    assert!(
        probe.next(Duration::from_millis(700)).await.is_none(),
        "published exactly once"
    );
    eventually(WAIT, "the row marked published", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn event_staged_in_a_rolled_back_transaction_is_never_published() {
    // Arrange
    let mut h = Harness::idle(fast_config()).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    h.spawn_relay();

    // Act: a rolled-back staging, then a committed one.
    let mut tx = h.pool.begin().await.unwrap();
    outbox::stage(&mut tx, &order("rolled-back"), &EventContext::new_flow())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    h.stage("committed").await;

    // Assert: only the committed event ever arrives.
    let first = probe.expect(WAIT, "the committed event").await;
    assert_eq!(first.decode::<OrderCreated>().order_id, "committed");
    assert!(probe.next(Duration::from_millis(700)).await.is_none());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the rolled-back row never existed");
    h.stop().await;
}

#[tokio::test]
async fn a_row_that_cannot_be_published_does_not_block_the_others() {
    // Arrange: a row with a routing key AMQP cannot carry, staged first.
    let mut config = fast_config();
    config.outbox_max_attempts = 2;
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let mut bad = Envelope::new(&order("bad"), "", &EventContext::new_flow());
    bad.routing_key = "x".repeat(300);
    let mut tx = h.pool.begin().await.unwrap();
    outbox::stage_envelope(&mut tx, &bad).await.unwrap();
    tx.commit().await.unwrap();
    for i in 0..5 {
        h.stage(&format!("good-{i}")).await;
    }

    // Act
    h.spawn_relay();

    // Assert: every good row arrives, in order, and the bad one ends up parked as dead.
    for i in 0..5 {
        let received = probe.expect(WAIT, "a good row").await;
        assert_eq!(
            received.decode::<OrderCreated>().order_id,
            format!("good-{i}")
        );
    }
    let (attempts, error): (i32, String) =
        eventually(WAIT, "the bad row parked as dead", || async {
            sqlx::query_as::<_, (i32, String, bool)>(
                "SELECT attempts, last_error, dead FROM outbox WHERE routing_key LIKE 'xxx%'",
            )
            .fetch_one(&h.pool)
            .await
            .ok()
            .and_then(|(a, e, dead)| dead.then_some((a, e)))
        })
        .await;
    assert_eq!(attempts, 2);
    assert!(error.contains("routing key"), "{error}");
    h.stop().await;
}

#[tokio::test]
async fn two_relays_on_one_outbox_publish_each_row_once() {
    // Arrange: rows staged before either relay runs, small batches so the relays interleave.
    let mut config = fast_config();
    config.outbox_batch = 16;
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let mut staged = HashSet::new();
    for i in 0..400 {
        staged.insert(h.stage(&format!("o-{i}")).await);
    }

    // Act
    h.spawn_relay();
    h.spawn_relay();

    // Assert: every row arrives; none twice.
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    while seen.len() < staged.len() {
        let received = probe.expect(WAIT, "every staged row").await;
        if !seen.insert(received.meta().message_id) {
            duplicates += 1;
        }
    }
    assert!(probe.next(Duration::from_millis(700)).await.is_none());
    assert_eq!(seen, staged);
    assert_eq!(
        duplicates, 0,
        "SKIP LOCKED keeps two relays off each other's rows"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_event_no_queue_is_bound_for_is_counted_as_unroutable_not_as_a_failure() {
    // Arrange: nothing is bound to the test's exchange.
    let mut h = Harness::idle(fast_config()).await;
    h.spawn_relay();

    // Act
    h.stage("nobody-listens").await;

    // Assert: the broker returned it (mandatory); the row is done, not failed, and counted.
    eventually(WAIT, "the unroutable event counted", || async {
        let text = h.metrics.render();
        (metric(
            &text,
            "shop_unroutable_messages_total",
            &[("routing_key", OrderCreated::ROUTING_KEY)],
        ) == 1.0)
            .then_some(())
    })
    .await;
    let (attempts, published): (i32, bool) =
        sqlx::query_as("SELECT attempts, published_at IS NOT NULL FROM outbox")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((attempts, published), (0, true));
    h.stop().await;
}

#[tokio::test]
async fn a_broker_that_withholds_confirms_neither_counts_against_the_rows_nor_keeps_them() {
    // Arrange: a relay whose broker connection goes through a proxy that can fall silent;
    // one failure of a row's own would park it.
    let mut config = fast_config();
    config.outbox_max_attempts = 1;
    config.outbox_confirm_timeout = Duration::from_millis(500);
    let h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let proxy = SilentProxy::start().await;
    let link = Link::new(
        &proxy.url,
        h.broker.names.connection_name("effects", "proxied"),
    );
    let relay = Relay::new(
        h.pool.clone(),
        link.clone(),
        h.broker.names.clone(),
        "test",
        RelayConfig::from(&h.config),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    h.stage("before").await;
    probe.expect(WAIT, "an event before the silence").await;

    // Act: the broker takes nothing and confirms nothing while five rows are staged.
    proxy.go_silent();
    for i in 0..5 {
        h.stage(&format!("held-{i}")).await;
    }

    // Assert: the round gives up on its confirms, and the rows are neither counted nor parked.
    eventually(
        WAIT,
        "the relay to give up waiting for the confirms",
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE last_error LIKE 'no confirm from the broker%'",
            )
            .fetch_one(&h.pool)
            .await
            .unwrap();
            (n == 5).then_some(())
        },
    )
    .await;
    let counted: (i32, i64) =
        sqlx::query_as("SELECT max(attempts), count(*) FILTER (WHERE dead) FROM outbox")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(counted, (0, 0), "no attempt counted, nothing parked");

    // Once the broker speaks again, every row goes out, still never counted against.
    proxy.speak_again();
    let mut seen = HashSet::new();
    while seen.len() < 5 {
        let received = probe.expect(WAIT, "a held row published").await;
        seen.insert(received.decode::<OrderCreated>().order_id);
    }
    eventually(WAIT, "every row marked published", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    let counted: (i32, i64) =
        sqlx::query_as("SELECT max(attempts), count(*) FILTER (WHERE dead) FROM outbox")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(counted, (0, 0));
    stop.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    link.close("test done").await;
    h.stop().await;
}
