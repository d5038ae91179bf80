//! The database pool every service uses: a connection is pinged before it is handed out only
//! when it sat idle for `PING_IF_IDLE_FOR`, not on every acquire.

use std::time::{Duration, Instant};

use shop_shared::db::{PING_IF_IDLE_FOR, connect};
use shop_shared::testing::{TestDatabase, eventually};
use sqlx::{ConnectOptions as _, PgConnection, PgPool};

/// The backend pid of the pool's (only) connection.
async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Waits until the pool's connection is back in it: a connection returned to the pool is pinged
/// (by sqlx) before it can be handed out again.
async fn returned(pool: &PgPool) {
    eventually(
        Duration::from_secs(10),
        "the connection back in the pool",
        || async { (pool.num_idle() == 1).then_some(()) },
    )
    .await;
}

/// Ends backend `pid` from `admin`'s connection and waits until the server no longer lists it.
async fn terminate(admin: &mut PgConnection, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut *admin)
        .await
        .unwrap();
    let admin = tokio::sync::Mutex::new(admin);
    eventually(Duration::from_secs(10), "the backend to be gone", || {
        let admin = &admin;
        async move {
            let mut admin = admin.lock().await;
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_one(&mut **admin)
                    .await
                    .ok()?;
            (left == 0).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_connection_used_a_moment_ago_is_handed_out_as_it_is_and_one_idle_longer_is_pinged_first()
{
    // Arrange: a pool of one connection, and a connection of our own to end its backend.
    let db = TestDatabase::create().await;
    let pool = connect(&db.url, 1).await.unwrap();
    let mut admin = db
        .url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let first = backend_pid(&pool).await.unwrap();

    // Act: its backend ends a moment after it was used, and it is asked for again at once.
    returned(&pool).await;
    terminate(&mut admin, first).await;
    let at_once = backend_pid(&pool).await;

    // Assert: handed out without a round trip, so its first statement is what finds it gone
    // (a ping would have found it and connected anew).
    assert!(at_once.is_err(), "used without a ping: {at_once:?}");
    let second = backend_pid(&pool).await.unwrap();
    assert_ne!(second, first, "the broken connection was replaced");

    // Act: its backend ends, and it is asked for once it sat idle long enough to be pinged.
    returned(&pool).await;
    let idle_since = Instant::now();
    terminate(&mut admin, second).await;
    tokio::time::sleep(
        PING_IF_IDLE_FOR.saturating_sub(idle_since.elapsed()) + Duration::from_millis(100),
    )
    .await;
    let after_idle = backend_pid(&pool).await;

    // Assert: the ping found it gone and the pool connected anew.
    let third =
        after_idle.expect("an idle connection is pinged, and replaced when it does not answer");
    assert_ne!(third, second);
    pool.close().await;
}
