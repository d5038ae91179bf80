//! What the consumer and the relay count, read back from the rendered Prometheus text: each
//! outcome of a delivery, retries per queue, dead letters, events sent per routing key,
//! connections opened (reconnects), and the sampled outbox gauges.

use std::time::Duration;

use shop_proto::Event as _;
use shop_proto::order::v1::OrderCreated;
use shop_shared::messaging::{Envelope, EventContext};
use shop_shared::metrics::{self, sampler};
use shop_shared::testing::{eventually, metric};

use crate::helpers::{Harness, SERVICE, WAIT, fast_config, order, publish_raw};

/// Waits until the series `name{labels}` of the harness' metrics reaches `at_least`.
async fn until_at_least(h: &Harness, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let what = format!("{name}{labels:?} >= {at_least}");
    eventually(WAIT, &what, || async {
        (metric(&h.metrics.render(), name, labels) >= at_least).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_outcome_of_a_delivery_is_counted_once() {
    // Arrange: retries after 200 ms (factor 3, 3 attempts).
    let h = Harness::start(fast_config()).await;
    let queue = h.broker.names.queue(SERVICE);
    let dlq = h.broker.names.dlq(SERVICE);
    let first_retry_queue = h
        .broker
        .names
        .retry_queue(SERVICE, Duration::from_millis(200));
    let duplicate = Envelope::new(&order("dup"), "test", &EventContext::new_flow());
    let duplicate = (
        OrderCreated::ROUTING_KEY,
        duplicate.properties(1),
        duplicate.payload.clone(),
    );
    let garbage = Envelope::new(&order("garbage"), "test", &EventContext::new_flow());

    // Act: one applied, one applied then its duplicate, one undecodable; then, alone in its
    // batch (a failure inside a larger batch is tried again on its own at once), one retried
    // once then applied; then one permanent failure.
    h.stage("plain").await;
    publish_raw(&h.broker, std::slice::from_ref(&duplicate)).await;
    eventually(WAIT, "the first copy and the plain one applied", || async {
        (h.effects("dup").await == 1 && h.effects("plain").await == 1).then_some(())
    })
    .await;
    publish_raw(
        &h.broker,
        &[
            duplicate,
            (
                OrderCreated::ROUTING_KEY,
                garbage.properties(1),
                vec![0xff, 0xff, 0xff],
            ),
        ],
    )
    .await;
    // Assert (waiting for each step before the next)
    let outcome = |o: metrics::Outcome| {
        [
            ("messaging_destination_name", queue.as_str()),
            ("routing_key", OrderCreated::ROUTING_KEY),
            ("outcome", o.as_str()),
        ]
    };
    let count = "messaging_process_duration_seconds_count";
    until_at_least(&h, count, &outcome(metrics::Outcome::Duplicate), 1.0).await;
    until_at_least(&h, count, &outcome(metrics::Outcome::DeadLettered), 1.0).await;
    h.stage("transient-1-a").await;
    until_at_least(&h, count, &outcome(metrics::Outcome::Retried), 1.0).await;
    h.stage("permanent-1").await;
    until_at_least(&h, count, &outcome(metrics::Outcome::Applied), 3.0).await;
    until_at_least(&h, count, &outcome(metrics::Outcome::DeadLettered), 2.0).await;
    until_at_least(&h, count, &outcome(metrics::Outcome::Duplicate), 1.0).await;
    // The dead letters are sampled from the broker.
    until_at_least(&h, metrics::DEAD_LETTERS, &[("queue", dlq.as_str())], 2.0).await;
    let text = h.metrics.render();
    assert_eq!(
        metric(&text, count, &outcome(metrics::Outcome::Applied)),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, count, &outcome(metrics::Outcome::Duplicate)),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, count, &outcome(metrics::Outcome::Retried)),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, count, &outcome(metrics::Outcome::DeadLettered)),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            metrics::RETRIES_SCHEDULED,
            &[
                ("routing_key", OrderCreated::ROUTING_KEY),
                ("retry_queue", first_retry_queue.as_str())
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, metrics::DEAD_LETTERS, &[("queue", dlq.as_str())]),
        2.0,
        "{text}"
    );
    // Seven deliveries in all (the retried one came back once), in at least one batch.
    assert_eq!(metric(&text, count, &[]), 7.0, "{text}");
    assert!(
        metric(&text, "shop_consumer_batch_messages_count", &[]) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "shop_consumer_batch_messages_sum", &[]),
        7.0,
        "{text}"
    );
    // The three staged events were published and confirmed.
    assert_eq!(
        metric(
            &text,
            metrics::SENT_MESSAGES,
            &[
                (
                    "messaging_destination_name",
                    h.broker.names.exchange().as_str()
                ),
                ("routing_key", OrderCreated::ROUTING_KEY)
            ]
        ),
        3.0,
        "{text}"
    );
    assert!(text.contains(&format!("service=\"{SERVICE}\"")), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn a_reconnect_shows_as_connections_opened() {
    // Arrange: the consumer's and the relay's connections.
    let h = Harness::start(fast_config()).await;
    until_at_least(&h, metrics::CONNECTIONS_OPENED, &[], 2.0).await;
    let before = metric(&h.metrics.render(), metrics::CONNECTIONS_OPENED, &[]);

    // Act: the broker closes them.
    eventually(WAIT, "the test's connections closed", || async {
        (h.broker.close_own_connections() >= 2).then_some(())
    })
    .await;

    // Assert: both came back, and an event still flows.
    until_at_least(&h, metrics::CONNECTIONS_OPENED, &[], before + 2.0).await;
    h.stage("after").await;
    eventually(WAIT, "the effect after the reconnect", || async {
        (h.effects("after").await == 1).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_outbox_gauges_show_what_waits_and_for_how_long() {
    // Arrange: no relay yet, two staged events, the first staged a minute ago.
    let h = Harness::idle(fast_config()).await;
    h.stage("waiting-1").await;
    h.stage("waiting-2").await;
    sqlx::query(
        "UPDATE outbox SET created_at = now() - interval '60 seconds' \
         WHERE id = (SELECT min(id) FROM outbox)",
    )
    .execute(&h.pool)
    .await
    .unwrap();

    // Act
    sampler::sample(&h.metrics, &h.pool).await;

    // Assert: two pending, the oldest a minute old.
    let text = h.metrics.render();
    assert_eq!(metric(&text, metrics::OUTBOX_PENDING, &[]), 2.0, "{text}");
    let age = metric(&text, metrics::OUTBOX_OLDEST_AGE, &[]);
    assert!((60.0..120.0).contains(&age), "{text}");
    assert_eq!(metric(&text, metrics::OUTBOX_DEAD, &[]), 0.0, "{text}");
    assert!(
        metric(&text, metrics::DB_CONNECTIONS_MAX, &[]) >= 1.0,
        "{text}"
    );

    // And once a relay published them, nothing waits.
    let mut h = h;
    h.spawn_relay();
    eventually(WAIT, "the outbox drained", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    sampler::sample(&h.metrics, &h.pool).await;
    let text = h.metrics.render();
    assert_eq!(metric(&text, metrics::OUTBOX_PENDING, &[]), 0.0, "{text}");
    assert_eq!(
        metric(&text, metrics::OUTBOX_OLDEST_AGE, &[]),
        0.0,
        "{text}"
    );
    h.stop().await;
}

/// docs/contract.md, "Bounds": label values come from a fixed set. A publisher choosing the
/// `x-original-routing-key` of 40 messages adds one series (`other`), not 40.
#[tokio::test]
async fn routing_keys_from_outside_are_counted_as_other() {
    use shop_shared::messaging::envelope::{ORIGINAL_ROUTING_KEY, long_string, with_headers};
    // Arrange
    let h = Harness::start(fast_config()).await;
    let count = "messaging_process_duration_seconds_count";
    let hostile: Vec<_> = (0..40)
        .map(|i| {
            let envelope =
                Envelope::new(&order(&format!("h{i}")), "test", &EventContext::new_flow());
            (
                OrderCreated::ROUTING_KEY,
                with_headers(
                    &envelope.properties(1),
                    [(ORIGINAL_ROUTING_KEY, long_string(&format!("hostile.{i}")))],
                ),
                envelope.payload,
            )
        })
        .collect();

    // Act
    publish_raw(&h.broker, &hostile).await;

    // Assert
    let other = [("routing_key", "other")];
    until_at_least(&h, count, &other, 40.0).await;
    let text = h.metrics.render();
    assert!(!text.contains("hostile."), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn the_queue_depth_and_the_consumer_lag_show_what_waits_and_how_late() {
    // Arrange: one delivery at a time, and a handler that holds the first until released.
    let mut config = fast_config();
    config.prefetch = 1;
    config.batch_size = 1;
    let h = Harness::start(config).await;
    let queue = h.broker.names.queue(SERVICE);
    let labels = [
        ("messaging_destination_name", queue.as_str()),
        ("routing_key", OrderCreated::ROUTING_KEY),
    ];

    // Act: five events while the handler holds the first.
    for i in 0..5 {
        h.stage(&format!("held-{i}")).await;
    }

    // Assert: four wait in the queue (the fifth is with the consumer), as sampled.
    eventually(WAIT, "four messages waiting in the queue", || async {
        (metric(
            &h.metrics.render(),
            metrics::QUEUE_MESSAGES,
            &[("queue", &queue)],
        ) == 4.0)
            .then_some(())
    })
    .await;
    h.recorder.release();
    until_at_least(&h, "shop_consumer_lag_seconds_count", &labels, 5.0).await;
    eventually(WAIT, "the queue drained, as sampled", || async {
        (metric(
            &h.metrics.render(),
            metrics::QUEUE_MESSAGES,
            &[("queue", &queue)],
        ) == 0.0)
            .then_some(())
    })
    .await;
    let text = h.metrics.render();
    assert_eq!(
        metric(&text, "shop_consumer_lag_seconds_count", &labels),
        5.0
    );
    // The last one waited behind the others: the lags add up to more than nothing.
    assert!(metric(&text, "shop_consumer_lag_seconds_sum", &labels) > 0.0);
    h.stop().await;
}
