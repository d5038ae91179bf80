use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic::Code;

use crate::helpers::{item, order_request, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_lose_their_database_connection_are_unavailable_and_a_retry_makes_one_order() {
    // Arrange: a known customer, and a loop that terminates the service's database backends.
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let admin = shop_shared::db::connect(
        &shop_shared::testing::with_database(&app.env.database.url, "postgres"),
        1,
    )
    .await
    .unwrap();
    let database = app.env.database.name.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&database)
                .fetch_one(&admin)
                .await
                .unwrap_or(0);
                killed += n;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            killed
        }
    });

    // Act: 300 orders, each with its own idempotency key, while the backends die.
    let mut calls = Vec::new();
    for i in 0..300 {
        let mut client = app.client.clone();
        let mut request = order_request(&customer, vec![item("a", 1, 10)]);
        request.idempotency_key = format!("transient-{i}");
        calls.push(tokio::spawn(async move {
            let result = client.create_order(request.clone()).await;
            (request, result)
        }));
    }
    let mut failed = Vec::new();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        let (request, result) = call.await.unwrap();
        if let Err(status) = result {
            *codes.entry(status.code()).or_default() += 1;
            failed.push((request, status));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();

    // Assert: every failure says "retry", and retrying with the same key makes one order each.
    assert!(killed > 0, "backends were terminated");
    for (_, status) in &failed {
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{status:?} (all: {codes:?})"
        );
    }
    for (request, _) in failed {
        let mut client = app.client.clone();
        shop_shared::testing::eventually(Duration::from_secs(10), "the retry to succeed", || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.create_order(request).await.ok() }
        })
        .await;
        client.create_order(request).await.unwrap();
    }
    let pool = shop_shared::db::connect(&app.env.database.url, 1)
        .await
        .unwrap();
    let per_key: Vec<(String, i64)> = sqlx::query_as(
        "SELECT idempotency_key, count(*) FROM orders \
         WHERE idempotency_key LIKE 'transient-%' GROUP BY idempotency_key",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_key.len(), 300, "every order exists");
    assert!(
        per_key.iter().all(|(_, n)| *n == 1),
        "exactly one order per key"
    );
    eprintln!("transient: {codes:?} failed calls, {killed} backends terminated");
}
