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

#[tokio::test]
async fn a_list_of_broker_nodes_connects_to_the_first_that_accepts_and_moves_on_after_a_loss() {
    use shop_shared::messaging::Link;
    use shop_shared::messaging::connection::connect_from;
    // Arrange: a node that refuses (nothing listens on port 1), then the real broker.
    let broker = shop_shared::testing::TestBroker::new();
    let dead = "amqp://guest:guest@127.0.0.1:1/%2f";
    let nodes = format!("{dead}, {}", broker.url);

    // Act
    let (conn, node) = connect_from(&nodes, 0, &broker.names.connection_name("test", "nodes"))
        .await
        .expect("the second node accepts");
    let connected = conn.status().connected();
    let link = Link::new(&nodes, broker.names.connection_name("test", "link"));
    let first = link
        .channel()
        .await
        .expect("a channel through the live node");
    let closed = broker.close_own_connections();
    let again = eventually(WAIT, "a channel after the loss", || async {
        link.channel().await.ok()
    })
    .await;

    // Assert
    assert_eq!(node, 1);
    assert!(connected);
    assert!(closed >= 2, "closed {closed}");
    assert!(again.generation > first.generation, "a new connection");
    assert!(again.channel.status().connected());
    link.close("test done").await;
}
