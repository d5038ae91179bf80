//! The database pool every service uses: a connection is pinged before it is handed out only
//! when it sat idle for `PING_IF_IDLE_FOR`, not on every acquire; the connections an RPC gives
//! back wait for the next RPC instead of going back to the pool (and its ping).

use std::time::{Duration, Instant};

use shop_shared::db::warm::KEEP;
use shop_shared::db::{PING_IF_IDLE_FOR, WarmConnections, connect};
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

/// The backend pid of `conn`.
async fn pid_of(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Waits until `n` of the pool's connections are idle in it.
async fn idle_in_pool(pool: &PgPool, n: usize) {
    eventually(
        Duration::from_secs(10),
        &format!("{n} connections idle in the pool"),
        || async { (pool.num_idle() == n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_connection_given_back_waits_for_the_next_call_and_goes_back_to_the_pool_once_it_waited_long()
 {
    // Arrange
    let db = TestDatabase::create().await;
    let pool = connect(&db.url, 4).await.unwrap();
    let warm = WarmConnections::new(pool.clone());

    // Act: a call finishes normally.
    let mut conn = warm.acquire().await.unwrap();
    let first = pid_of(&mut conn).await;
    conn.give_back();
    let given_back = Instant::now();

    // Assert: it waits here, out of the pool, and the next call has the same backend.
    assert_eq!(warm.waiting(), 1);
    assert_eq!(
        pool.num_idle(),
        0,
        "not handed back to the pool (and its ping)"
    );
    let mut conn = warm.acquire().await.unwrap();
    assert_eq!(pid_of(&mut conn).await, first);
    conn.give_back();

    // Assert: once it waited `PING_IF_IDLE_FOR`, the sweeper gives it back to the pool.
    idle_in_pool(&pool, 1).await;
    assert!(given_back.elapsed() >= PING_IF_IDLE_FOR);
    assert_eq!(warm.waiting(), 0);
    pool.close().await;
}

#[tokio::test]
async fn a_connection_not_given_back_goes_back_to_the_pool_and_at_most_keep_wait() {
    // Arrange
    let db = TestDatabase::create().await;
    // Room for one more than the burst below: the pool is never exhausted.
    let pool = connect(&db.url, (KEEP + 3) as u32).await.unwrap();
    let warm = WarmConnections::new(pool.clone());

    // Act: a call that failed or was cancelled drops its connection.
    let mut conn = warm.acquire().await.unwrap();
    pid_of(&mut conn).await;
    drop(conn);

    // Assert: back in the pool, which pings it.
    idle_in_pool(&pool, 1).await;
    assert_eq!(warm.waiting(), 0);

    // Act: a burst of calls gives back more than `KEEP`.
    let mut burst = Vec::new();
    for _ in 0..KEEP + 2 {
        burst.push(warm.acquire().await.unwrap());
    }
    for conn in burst {
        conn.give_back();
    }

    // Assert: `KEEP` wait, the rest are back in the pool for the consumers and the relay.
    assert_eq!(warm.waiting(), KEEP);
    idle_in_pool(&pool, 2).await;

    // Act: the service stops while a call is still running.
    let late = warm.acquire().await.unwrap();
    warm.close();
    late.give_back();

    // Assert: every connection is back, so the pool closes; nothing waits from now on.
    assert_eq!(warm.waiting(), 0);
    tokio::time::timeout(Duration::from_secs(10), pool.close())
        .await
        .expect("the pool closes once the waiting connections are back");
}

#[tokio::test]
async fn a_connection_given_back_while_the_pool_is_exhausted_goes_to_the_call_waiting_for_one() {
    // Arrange: a pool of one connection, taken by a call.
    let db = TestDatabase::create().await;
    let pool = connect(&db.url, 1).await.unwrap();
    let warm = WarmConnections::new(pool.clone());
    let mut first = warm.acquire().await.unwrap();
    let pid = pid_of(&mut first).await;

    // Act: a second call queues for the pool's connection, and the first call finishes.
    let second = tokio::spawn({
        let warm = warm.clone();
        async move {
            let mut conn = warm.acquire().await.unwrap();
            let pid = pid_of(&mut conn).await;
            conn.give_back();
            pid
        }
    });
    // The test's runtime has one thread: yielding lets the second call run until it waits.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    first.give_back();

    // Assert: not kept (for a later call, or until the sweeper's second): the waiting call has it.
    assert_eq!(warm.waiting(), 0);
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the queued call gets the connection given back")
        .unwrap();
    assert_eq!(second, pid);
    warm.close();
    pool.close().await;
}
