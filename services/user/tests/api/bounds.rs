//! docs/contract.md, "Bounds", as the user service keeps them: password checks bounded in
//! number (so in memory) whatever the number of callers, and failed logins purged for every
//! email, not only on that email's next attempt.

use std::time::Duration;

use shop_proto::user::v1::LoginRequest;
use shop_shared::testing::eventually;
use tonic::Code;

use crate::helpers::{WAIT, spawn_app_with};

async fn failed_logins(app: &crate::helpers::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM login_failures")
        .fetch_one(&app.db)
        .await
        .expect("count the failed logins")
}

#[tokio::test]
async fn password_checks_beyond_the_running_and_waiting_ones_are_refused_at_once_and_write_nothing()
{
    // Arrange: one check at a time, one waiting; each check costs real time (16 MiB, 3 passes).
    let app = spawn_app_with(|c| {
        c.password.memory_kib = 16 * 1024;
        c.password.iterations = 3;
        c.password_checks.concurrency = 1;
        c.password_checks.queue = 1;
    })
    .await;
    let before = failed_logins(&app).await;

    // Act: 20 Logins for unknown emails at once.
    let calls = (0..20).map(|i| {
        let mut client = app.anonymous.clone();
        async move {
            client
                .login(LoginRequest {
                    email: format!("nobody-{i}@example.com"),
                    password: "not a password".into(),
                })
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;

    // Assert: a few checked (UNAUTHENTICATED), the rest refused at once; only the checked ones
    // were recorded as failed logins.
    let mut checked = 0;
    let mut refused = 0;
    for answer in answers {
        let status = answer.expect_err("no one knows these emails");
        match status.code() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => {
                assert_eq!(
                    status.message(),
                    "too many password checks in progress; retry shortly"
                );
                refused += 1;
            }
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
    }
    assert!(
        refused > 0,
        "20 calls at once against 1 running + 1 waiting"
    );
    assert!(checked >= 2, "the admitted ones were checked");
    assert_eq!(
        failed_logins(&app).await - before,
        checked,
        "refused calls wrote nothing"
    );
}

#[tokio::test]
async fn failed_logins_past_the_window_are_purged_for_every_email() {
    // Arrange: a 1 s window, purged every second.
    let mut app = spawn_app_with(|c| {
        c.auth.login_window = Duration::from_secs(1);
        c.service.messaging.purge_interval = Duration::from_secs(1);
    })
    .await;

    // Act: failed logins for three emails, none of which is ever tried again.
    for i in 0..3 {
        let status = app
            .login(&format!("gone-{i}@example.com"), "wrong password")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert!(failed_logins(&app).await >= 3);

    // Assert
    eventually(WAIT, "every failed login purged", || async {
        (failed_logins(&app).await == 0).then_some(())
    })
    .await;
}
