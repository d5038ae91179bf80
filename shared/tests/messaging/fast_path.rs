//! The relay's fast path: events handed over after their commit are published at once,
//! without a claim; what is not handed over is still published by the claiming relay; a row
//! both paths publish is counted.

use std::time::Duration;

use shop_shared::messaging::{Envelope, EventContext, OutboxWaker, outbox};
use shop_shared::testing::{EventProbe, eventually, metric};

use crate::helpers::{Harness, WAIT, fast_config, order};

/// Claim rounds that claimed rows (the fast path runs none).
const ROUNDS: &str = "shop_outbox_relay_round_duration_seconds_count";

/// Stages `OrderCreated { order_id }` in a committed transaction; returns the staged envelope.
async fn commit(h: &Harness, order_id: &str) -> Envelope {
    let envelope = Envelope::new(&order(order_id), "", &EventContext::new_flow());
    let mut tx = h.pool.begin().await.unwrap();
    outbox::stage_envelope(&mut tx, &envelope).await.unwrap();
    tx.commit().await.unwrap();
    envelope
}

/// Gets the relay's fast path open and in use: a first event through the claim (woken), so
/// the relay's first round is over (the fast path opens after it), then one handed over.
async fn warm_up(h: &Harness, waker: &OutboxWaker, probe: &mut EventProbe) {
    commit(h, "warm-up-claimed").await;
    waker.wake();
    probe.expect(WAIT, "the first event").await;
    eventually(WAIT, "its claim round counted", || async {
        (metric(&h.metrics.render(), ROUNDS, &[]) >= 1.0).then_some(())
    })
    .await;
    let envelope = commit(h, "warm-up-handed").await;
    waker.committed(vec![envelope]);
    probe.expect(WAIT, "the handed-over event").await;
    eventually(WAIT, "the warm-up rows marked", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_committed_event_handed_over_is_published_at_once_without_a_claim() {
    // Arrange: a relay that never polls; only the hand-off can make it publish.
    let config = shop_shared::messaging::MessagingConfig {
        outbox_poll: Duration::from_secs(3600),
        ..fast_config()
    };
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let waker = OutboxWaker::new();
    h.spawn_relay_with(&waker);
    warm_up(&h, &waker, &mut probe).await;
    let rounds = metric(&h.metrics.render(), ROUNDS, &[]);

    // Act
    let envelope = commit(&h, "o-fast").await;
    waker.committed(vec![envelope.clone()]);

    // Assert: published once, its row marked, and no claim round ran for it.
    let received = probe.expect(WAIT, "the handed-over event").await;
    assert_eq!(received.meta().message_id, envelope.message_id);
    assert_eq!(
        received.decode::<shop_proto::order::v1::OrderCreated>(),
        order("o-fast")
    );
    eventually(WAIT, "the row marked published", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    assert_eq!(metric(&h.metrics.render(), ROUNDS, &[]), rounds);
    assert!(
        probe.next(Duration::from_millis(500)).await.is_none(),
        "published exactly once"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_event_committed_but_never_handed_over_is_published_by_the_claiming_relay() {
    // Arrange: the fast path in use; its grace (the confirm timeout) short.
    let config = shop_shared::messaging::MessagingConfig {
        outbox_confirm_timeout: Duration::from_secs(1),
        ..fast_config()
    };
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let waker = OutboxWaker::new();
    h.spawn_relay_with(&waker);
    warm_up(&h, &waker, &mut probe).await;

    // Act: committed, then the process "dies" before handing it over.
    let envelope = commit(&h, "o-orphan").await;

    // Assert: a claiming round takes it once it is older than the grace.
    let received = probe.expect(WAIT, "the orphaned event").await;
    assert_eq!(received.meta().message_id, envelope.message_id);
    eventually(WAIT, "the row marked published", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    assert!(
        probe.next(Duration::from_millis(500)).await.is_none(),
        "published exactly once"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_row_the_claiming_relay_published_first_is_counted_when_the_fast_path_publishes_it_too() {
    // Arrange
    let mut h = Harness::idle(fast_config()).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let waker = OutboxWaker::new();
    h.spawn_relay_with(&waker);
    warm_up(&h, &waker, &mut probe).await;
    let envelope = commit(&h, "o-twice").await;
    // The claiming relay's mark, as if it had taken the row first.
    sqlx::query("UPDATE outbox SET published_at = now() WHERE message_id = $1")
        .bind(envelope.message_id)
        .execute(&h.pool)
        .await
        .unwrap();

    // Act
    waker.committed(vec![envelope]);

    // Assert: a duplicate on the wire (the inbox absorbs it), and counted.
    probe.expect(WAIT, "the duplicate").await;
    eventually(WAIT, "the duplicate counted", || async {
        let text = h.metrics.render();
        (metric(&text, "shop_outbox_published_twice_total", &[]) == 1.0).then_some(())
    })
    .await;
    h.stop().await;
}
