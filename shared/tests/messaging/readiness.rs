//! `GET /ready`: 200 while the service can use its database and broker, 503 with the reason
//! while it cannot.

use shop_shared::messaging::Links;
use shop_shared::readiness::Readiness;
use shop_shared::testing::{TestBroker, TestDatabase, http_get};

/// Serves `readiness` on a port of its own and asks it once.
async fn ask(readiness: Readiness) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, readiness.router()).await });
    let answer = http_get(&format!("http://{addr}/ready")).await;
    server.abort();
    answer
}

#[tokio::test]
async fn ready_while_the_database_and_the_broker_answer_and_not_when_either_does_not() {
    // Arrange: links that have connected, as a running service's have.
    let (_db, pool) = TestDatabase::migrated(None).await;
    let broker = TestBroker::new();
    let links = Links::new(&broker.url, &broker.names, "ready");
    links.publish.channel().await.unwrap();
    links.consume.channel().await.unwrap();

    // Act and assert: ready.
    let ready = ask(Readiness::new(pool.clone(), links.clone(), true)).await;
    assert_eq!(ready.unwrap(), "ready\n");

    // A broker that cannot be reached: 503, naming the broker.
    let nowhere = Links::new("amqp://guest:guest@127.0.0.1:1/%2f", &broker.names, "ready");
    let refused = ask(Readiness::new(pool.clone(), nowhere, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("503"), "{refused}");
    assert!(
        refused.contains("not ready: no connection to the broker"),
        "{refused}"
    );

    // The broker connection lost: 503 until it is back.
    links.consume.close("test").await;
    let lost = ask(Readiness::new(pool.clone(), links.clone(), true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        lost.contains("no connection to the broker (consuming)"),
        "{lost}"
    );

    // A database that cannot be used: 503, naming the database.
    pool.close().await;
    let closed = ask(Readiness::new(pool, links.clone(), false))
        .await
        .unwrap_err()
        .to_string();
    assert!(closed.starts_with("503"), "{closed}");
    assert!(closed.contains("not ready: the database"), "{closed}");
    links.close("test done").await;
}
