use std::time::Duration;

use lapin::BasicProperties;
use shop_proto::Event as _;
use shop_proto::order::v1::OrderCreated;
use shop_shared::messaging::envelope::{DEATH_REASON, ORIGINAL_ROUTING_KEY, RETRY_COUNT};
use shop_shared::messaging::{Envelope, EventContext, MessagingConfig};
use shop_shared::testing::{EventProbe, eventually, metric};

use crate::helpers::{Harness, SERVICE, WAIT, fast_config, order, publish_raw};

#[tokio::test]
async fn duplicate_delivery_of_the_same_message_id_has_one_effect() {
    // Arrange
    let h = Harness::start(fast_config()).await;
    let envelope = Envelope::new(&order("dup"), "test", &EventContext::new_flow());
    let message = (
        OrderCreated::ROUTING_KEY,
        envelope.properties(1),
        envelope.payload.clone(),
    );

    // Act: the same message three times, in one burst and once more after it was applied.
    publish_raw(&h.broker, &[message.clone(), message.clone()]).await;
    eventually(WAIT, "the first effect", || async {
        (h.effects("dup").await >= 1).then_some(())
    })
    .await;
    publish_raw(&h.broker, &[message]).await;
    h.stage("marker").await;

    // Assert: once the later marker is applied, the duplicate was handled too, and skipped.
    eventually(WAIT, "the marker's effect", || async {
        (h.effects("marker").await == 1).then_some(())
    })
    .await;
    assert_eq!(h.effects("dup").await, 1);
    assert_eq!(h.recorder.attempts("dup").len(), 1, "the handler ran once");
    h.stop().await;
}

#[tokio::test]
async fn transient_failure_is_retried_with_growing_delay_then_succeeds() {
    // Arrange: base 200 ms, factor 3, 3 attempts.
    let h = Harness::start(fast_config()).await;

    // Act
    h.stage("transient-2-a").await;

    // Assert
    eventually(WAIT, "the effect after two retries", || async {
        (h.effects("transient-2-a").await == 1).then_some(())
    })
    .await;
    let attempts = h.recorder.attempts("transient-2-a");
    assert_eq!(attempts.len(), 3);
    let first_wait = attempts[1] - attempts[0];
    let second_wait = attempts[2] - attempts[1];
    assert!(first_wait >= Duration::from_millis(190), "{first_wait:?}");
    assert!(second_wait >= Duration::from_millis(590), "{second_wait:?}");
    assert!(second_wait > first_wait);
    h.stop().await;
}

/// docs/contract.md, "Bounds": a message whose properties the AMQP client cannot parse (here a
/// `message_id` that is not UTF-8) makes lapin drop the whole consuming connection. Without
/// the quarantine it came back first on every reconnect, until the queue's delivery limit (50
/// reconnects with backoff, minutes) dead-lettered it together with the messages in flight
/// around it; now it is in the DLQ after one failed delivery, readable, and the messages behind
/// it are applied once each.
#[tokio::test]
async fn a_message_the_amqp_client_cannot_parse_reaches_the_dlq_at_once_and_the_others_are_applied()
{
    // Arrange: the poison first in the queue, ten good messages behind it, all before the
    // consumer starts, so they arrive in one burst with it.
    let mut h = Harness::idle(fast_config()).await;
    let consumer = h.consumer();
    consumer.declare().await.expect("declare the topology");
    let mut dlq = EventProbe::queue(&h.broker, &h.broker.names.dlq(SERVICE)).await;
    let poison = Envelope::new(&order("unreadable"), "test", &EventContext::new_flow());
    shop_shared::messaging::quarantine::publish_with_raw_message_id(
        &h.broker.url,
        &h.broker.names.exchange(),
        OrderCreated::ROUTING_KEY,
        b"m-\xff\xfe-id",
        &poison.payload,
    )
    .await
    .expect("publish the unreadable message");
    let good: Vec<_> = (0..10)
        .map(|i| {
            let envelope = Envelope::new(
                &order(&format!("behind-{i}")),
                "test",
                &EventContext::new_flow(),
            );
            (
                OrderCreated::ROUTING_KEY,
                envelope.properties(1),
                envelope.payload,
            )
        })
        .collect();
    publish_raw(&h.broker, &good).await;

    // Act
    h.spawn_consumer(consumer).await;
    h.spawn_relay();

    // Assert: the poison is in the DLQ, readable, with its reason and its raw properties.
    let dead = dlq
        .expect(WAIT, "the unreadable message, copied to the DLQ")
        .await;
    let reason = dead.header(DEATH_REASON).expect("x-death-reason");
    assert!(reason.contains("cannot read"), "{reason}");
    assert_eq!(dead.body, poison.payload, "its body as it was");
    let raw = dead
        .header(shop_shared::messaging::quarantine::ORIGINAL_PROPERTIES)
        .expect("the original properties");
    assert!(
        raw.contains("6d2dfffe2d6964"),
        "the message_id's bytes: {raw}"
    );
    assert_eq!(
        dead.header(ORIGINAL_ROUTING_KEY).as_deref(),
        Some(OrderCreated::ROUTING_KEY)
    );
    // Every message behind it applied once; the consumer goes on.
    eventually(WAIT, "the ten messages behind it", || async {
        (h.total_effects().await == 10).then_some(())
    })
    .await;
    for i in 0..10 {
        assert_eq!(h.recorder.attempts(&format!("behind-{i}")).len(), 1);
    }
    h.stage("later").await;
    eventually(WAIT, "a message published afterwards", || async {
        (h.effects("later").await == 1).then_some(())
    })
    .await;
    assert!(
        dlq.next(Duration::from_millis(300)).await.is_none(),
        "nothing else was dead-lettered"
    );
    assert_eq!(h.effects("unreadable").await, 0);
    h.stop().await;
}

/// docs/contract.md, "Bounds": a `message_id`, `correlation_id` or `x-actor-id` that cannot be
/// stored (a NUL, say) is dead-lettered at once with a reason, and the messages behind it are
/// applied as usual: before, each attempt failed on the inbox's text column and the queue stalled.
#[tokio::test]
async fn unstorable_properties_are_dead_lettered_at_once_and_the_messages_behind_are_applied() {
    use shop_shared::messaging::envelope::{ACTOR_ID, long_string, with_headers};
    // Arrange
    let h = Harness::start(fast_config()).await;
    let mut dlq = EventProbe::queue(&h.broker, &h.broker.names.dlq(SERVICE)).await;
    let poison = |order_id: &str| {
        let envelope = Envelope::new(&order(order_id), "test", &EventContext::new_flow());
        (envelope.properties(1), envelope.payload)
    };
    let (id_props, id_body) = poison("nul-id");
    let (correlation_props, correlation_body) = poison("nul-correlation");
    let (actor_props, actor_body) = poison("nul-actor");

    // Act
    publish_raw(
        &h.broker,
        &[
            (
                OrderCreated::ROUTING_KEY,
                id_props.with_message_id("m\0id".into()),
                id_body,
            ),
            (
                OrderCreated::ROUTING_KEY,
                correlation_props.with_correlation_id("c\0".into()),
                correlation_body,
            ),
            (
                OrderCreated::ROUTING_KEY,
                with_headers(&actor_props, [(ACTOR_ID, long_string("a\0"))]),
                actor_body,
            ),
        ],
    )
    .await;
    h.stage("after").await;

    // Assert
    eventually(WAIT, "the good message behind the poison", || async {
        (h.effects("after").await == 1).then_some(())
    })
    .await;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let dead = dlq.expect(WAIT, "a dead letter").await;
        let count = dead
            .properties
            .headers()
            .as_ref()
            .and_then(|h| shop_shared::messaging::envelope::header_u32(h, RETRY_COUNT));
        assert_eq!(
            count.unwrap_or(0),
            0,
            "dead-lettered at once, never retried"
        );
        reasons.push(dead.header(DEATH_REASON).expect("x-death-reason"));
    }
    reasons.sort();
    let joined = reasons.join(" | ");
    for name in ["message_id", "correlation_id", "x-actor-id"] {
        assert!(joined.contains(&format!("the {name}")), "{name}: {joined}");
    }
    assert!(joined.contains("cannot be stored"), "{joined}");
    assert_eq!(
        h.total_effects().await,
        1,
        "no poison message had an effect"
    );
    h.stop().await;
}

#[tokio::test]
async fn permanent_failure_and_garbage_bytes_land_in_the_dlq_and_the_consumer_keeps_going() {
    // Arrange
    let h = Harness::start(fast_config()).await;
    let mut dlq = EventProbe::queue(&h.broker, &h.broker.names.dlq(SERVICE)).await;
    let good = Envelope::new(&order("x"), "test", &EventContext::new_flow()).properties(1);

    // Act: a permanent failure, garbage bytes, a missing message id, an unknown type, and a
    // transient failure that outlives the retry budget; then a good message.
    h.stage("permanent-1").await;
    publish_raw(
        &h.broker,
        &[
            (
                OrderCreated::ROUTING_KEY,
                good.clone(),
                vec![0xff, 0xfe, 0xfd],
            ),
            (
                OrderCreated::ROUTING_KEY,
                BasicProperties::default().with_type(OrderCreated::TYPE_NAME.into()),
                vec![],
            ),
            (
                OrderCreated::ROUTING_KEY,
                good.clone()
                    .with_message_id("m-unknown".into())
                    .with_type("shop.order.v1.Nope".into()),
                vec![],
            ),
        ],
    )
    .await;
    h.stage("transient-9-b").await;
    h.stage("after").await;

    // Assert: the consumer kept going…
    eventually(WAIT, "the good message after the poison", || async {
        (h.effects("after").await == 1).then_some(())
    })
    .await;
    // …and every poison message is in the DLQ, with its reason.
    let mut reasons = Vec::new();
    for _ in 0..5 {
        let dead = dlq.expect(WAIT, "a dead letter").await;
        let reason = dead.header(DEATH_REASON).expect("x-death-reason");
        assert_eq!(
            dead.header(ORIGINAL_ROUTING_KEY).as_deref(),
            Some(OrderCreated::ROUTING_KEY)
        );
        if reason.contains("attempts") {
            assert_eq!(dead.header(RETRY_COUNT).as_deref(), None, "numeric header");
            let count = dead
                .properties
                .headers()
                .as_ref()
                .and_then(|h| shop_shared::messaging::envelope::header_u32(h, RETRY_COUNT));
            assert_eq!(count, Some(2), "failed after 3 attempts: 2 retries");
        }
        reasons.push(reason);
    }
    reasons.sort();
    let joined = reasons.join(" | ");
    assert!(joined.contains("permanent failure"), "{joined}");
    assert!(
        joined.contains("not a valid shop.order.v1.OrderCreated"),
        "{joined}"
    );
    assert!(joined.contains("no message_id"), "{joined}");
    assert!(joined.contains("unknown message type"), "{joined}");
    assert!(joined.contains("after 3 attempts"), "{joined}");
    assert_eq!(
        h.total_effects().await,
        1,
        "no poison message had an effect"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_channel_keeps_its_database_connection_while_batches_come_and_gives_it_back_when_quiet() {
    // Arrange: a consumer on one channel, nothing else on the pool (no relay: the test
    // publishes), and several idle connections in the pool (handed out first-in first-out, so
    // batches that each took one from the pool would rotate through them).
    let mut h = Harness::idle(MessagingConfig {
        concurrency: 1,
        ..fast_config()
    })
    .await;
    h.spawn_consumer(h.consumer()).await;
    let held = futures::future::try_join_all((0..4).map(|_| h.pool.acquire()))
        .await
        .unwrap();
    drop(held);

    // Act: three batches, one after another.
    for order_id in ["kept-1", "kept-2", "kept-3"] {
        let envelope = Envelope::new(&order(order_id), "test", &EventContext::new_flow());
        let message = (
            OrderCreated::ROUTING_KEY,
            envelope.properties(1),
            envelope.payload.clone(),
        );
        publish_raw(&h.broker, &[message]).await;
        eventually(WAIT, "the effect", || async {
            (h.effects(order_id).await == 1).then_some(())
        })
        .await;
    }

    // Assert: the three transactions ran on one connection …
    let backends: Vec<i32> =
        sqlx::query_scalar("SELECT DISTINCT backend FROM effects WHERE order_id LIKE 'kept-%'")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        backends.len(),
        1,
        "one connection for every batch: {backends:?}"
    );
    // … which is back in the pool once the consumer has been quiet for a while.
    eventually(WAIT, "no connection kept by the quiet consumer", || async {
        (h.pool.num_idle() as u32 == h.pool.size()).then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn a_repeat_is_acknowledged_as_a_duplicate_even_when_its_handler_would_fail_now() {
    // Arrange: a message whose first delivery was applied (its id is in the inbox), and whose
    // handler fails whenever it runs; a new message beside it.
    let h = Harness::start(fast_config()).await;
    let mut dlq = EventProbe::queue(&h.broker, &h.broker.names.dlq(SERVICE)).await;
    let repeat = Envelope::new(
        &order("permanent-repeat"),
        "test",
        &EventContext::new_flow(),
    );
    sqlx::query("INSERT INTO inbox (consumer, message_id) VALUES ($1, $2)")
        .bind(SERVICE)
        .bind(repeat.message_id.to_string())
        .execute(&h.pool)
        .await
        .unwrap();
    let new = Envelope::new(&order("new"), "test", &EventContext::new_flow());

    // Act: both delivered at once (one batch, as a rule).
    publish_raw(
        &h.broker,
        &[
            (
                OrderCreated::ROUTING_KEY,
                repeat.properties(1),
                repeat.payload.clone(),
            ),
            (
                OrderCreated::ROUTING_KEY,
                new.properties(1),
                new.payload.clone(),
            ),
        ],
    )
    .await;

    // Assert: the new one applied; the repeat acknowledged as a duplicate, not dead-lettered.
    eventually(WAIT, "the new message's effect", || async {
        (h.effects("new").await == 1).then_some(())
    })
    .await;
    eventually(WAIT, "the repeat acknowledged as a duplicate", || async {
        let duplicates = metric(
            &h.metrics.render(),
            "messaging_process_duration_seconds_count",
            &[("outcome", "duplicate")],
        );
        (duplicates == 1.0).then_some(())
    })
    .await;
    assert!(
        dlq.next(Duration::from_millis(500)).await.is_none(),
        "nothing dead-lettered"
    );
    assert_eq!(
        h.total_effects().await,
        1,
        "only the new message had an effect"
    );
    h.stop().await;
}
