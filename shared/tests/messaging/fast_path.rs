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

/// A relay with its fast path warmed up ([`warm_up`]), a probe of everything published, and
/// the waker that hands over to it.
async fn warmed_up(
    config: shop_shared::messaging::MessagingConfig,
) -> (Harness, EventProbe, OutboxWaker) {
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let waker = OutboxWaker::new();
    h.spawn_relay_with(&waker);
    warm_up(&h, &waker, &mut probe).await;
    (h, probe, waker)
}

#[tokio::test]
async fn a_committed_event_handed_over_is_published_at_once_without_a_claim() {
    // Arrange: a relay that never polls; only the hand-off can make it publish.
    let config = shop_shared::messaging::MessagingConfig {
        outbox_poll: Duration::from_secs(3600),
        ..fast_config()
    };
    let (h, mut probe, waker) = warmed_up(config).await;
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
    let (h, mut probe, _waker) = warmed_up(config).await;

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
    let (h, mut probe, waker) = warmed_up(fast_config()).await;
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

#[tokio::test]
async fn a_claim_that_began_before_the_fast_path_was_in_use_leaves_what_was_handed_over_meanwhile()
{
    // Arrange: hand-offs open (the first round is over) but nothing handed over yet, so a
    // claiming round takes every due row; a row committed, not handed over yet; the outbox
    // locked, so the next round's claim waits in its SELECT.
    let config = shop_shared::messaging::MessagingConfig {
        outbox_poll: Duration::from_secs(3600),
        ..fast_config()
    };
    let mut h = Harness::idle(config).await;
    let mut probe = EventProbe::bind(&h.broker, &["#"]).await;
    let waker = OutboxWaker::new();
    // Taken by the relay's first round (no wake-up: none is left over to start another round).
    commit(&h, "warm-up-claimed").await;
    h.spawn_relay_with(&waker);
    probe.expect(WAIT, "the first event").await;
    eventually(WAIT, "its round marked", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    let envelope = commit(&h, "o-meanwhile").await;
    let mut locker = h.pool.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *locker).await.unwrap();
    sqlx::query("LOCK TABLE outbox IN EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    waker.wake();
    eventually(WAIT, "the round's claim waiting for the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE SKIP LOCKED%'",
        )
        .fetch_one(&h.pool)
        .await
        .ok()?;
        (waiting > 0).then_some(())
    })
    .await;

    // Act: the row handed over while the round claims; then the lock goes.
    waker.committed(vec![envelope.clone()]);
    let received = probe.expect(WAIT, "the handed-over event").await;
    sqlx::query("COMMIT").execute(&mut *locker).await.unwrap();

    // Assert: the round left it to the fast path: published once, marked, not counted twice.
    assert_eq!(received.meta().message_id, envelope.message_id);
    eventually(WAIT, "the row marked published", || async {
        (h.unpublished().await == 0).then_some(())
    })
    .await;
    assert!(
        probe.next(Duration::from_millis(500)).await.is_none(),
        "published exactly once"
    );
    assert_eq!(
        metric(
            &h.metrics.render(),
            "shop_outbox_published_twice_total",
            &[]
        ),
        0.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_stop_while_the_fast_path_is_in_use_publishes_every_committed_row_before_it_returns() {
    // Arrange: the fast path in use, its grace long, so a claiming round leaves every young
    // row to it; a row committed but never handed over (its hand-off was lost, or the
    // hand-off queue was full), so only the claiming relay can publish it.
    let config = shop_shared::messaging::MessagingConfig {
        outbox_poll: Duration::from_secs(3600),
        outbox_confirm_timeout: Duration::from_secs(60),
        ..fast_config()
    };
    let (mut h, mut probe, _waker) = warmed_up(config).await;
    let envelope = commit(&h, "o-left").await;

    // Act
    let drained = h.stop_tasks().await;

    // Assert: the relay published it before it returned, and counted it as drained.
    assert_eq!(h.unpublished().await, 0, "a committed row left unpublished");
    let received = probe
        .expect(WAIT, "the row left to the claiming relay")
        .await;
    assert_eq!(received.meta().message_id, envelope.message_id);
    assert_eq!(drained, [1], "the relay's drained rows");
    h.stop().await;
}
