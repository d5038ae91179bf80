use shop_shared::testing::eventually;

use crate::helpers::{Harness, WAIT, fast_config};

#[tokio::test]
async fn publishing_and_consuming_resume_after_the_broker_closes_the_connections() {
    // Arrange: the pipeline works.
    let h = Harness::start(fast_config()).await;
    h.stage("before").await;
    eventually(WAIT, "the effect before the fault", || async {
        (h.effects("before").await == 1).then_some(())
    })
    .await;

    // Act: the broker closes the relay's and the consumer's connections (only this test's).
    let closed = h.broker.close_own_connections();
    assert!(closed >= 2, "closed {closed} connections");
    for i in 0..20 {
        h.stage(&format!("after-{i}")).await;
    }

    // Assert: everything staged after the fault is applied, exactly once.
    eventually(WAIT, "every effect after the fault", || async {
        (h.total_effects().await == 21).then_some(())
    })
    .await;
    for i in 0..20 {
        assert_eq!(h.effects(&format!("after-{i}")).await, 1);
    }
    h.stop().await;
}
