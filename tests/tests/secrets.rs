//! Tokens and passwords never leak: through a whole saga every log line (with its spans'
//! fields, at debug level), every message on the broker (properties, headers, body) and
//! every outbox row is searched for the access tokens and the password, and none holds them.
//! Its own test binary, so that its log subscriber sees every line of the run.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use shop_proto::order::v1::{CancelOrderRequest, GetOrderRequest};
use shop_proto::user::v1::{GetUserRequest, UpdateUserRequest};
use shop_shared::testing::{EventProbe, with_authorization};
use shop_tests::{Clients, PASSWORD, TestSystem, login, order_request};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_token_or_password_reaches_a_log_line_a_message_or_an_outbox_row() {
    // Arrange: every log line of this process, debug and up, with span fields.
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "debug,h2=info,hyper=info,hyper_util=info,tower=info,lapin=info,pinky_swear=info",
        ))
        .with_writer(logs.clone())
        .with_ansi(false)
        .init();
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["#"]).await;
    system.stock_up("secret-sku", 5).await;

    // Act: a whole flow with the customer's own token, a profile change, and refused calls.
    let customer = system.logged_in_customer().await;
    let mut users = system.clients.user.clone();
    let second_token = login(&mut users, &customer.email, PASSWORD)
        .await
        .unwrap()
        .access_token;
    let mut mine = system.clients_as(&customer);
    let order = mine
        .order
        .create_order(order_request(&customer.user_id, &[("secret-sku", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    system.settled(&order.order_id).await;
    mine.user
        .update_user(UpdateUserRequest {
            user_id: customer.user_id.clone(),
            email: None,
            name: Some("Renamed".into()),
        })
        .await
        .unwrap();
    mine.order
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let bare = Clients::connect_lazy(system.addresses());
    let tampered = format!("{}x", customer.token);
    let mut refused = bare.clone();
    assert!(
        refused
            .order
            .get_order(with_authorization(
                GetOrderRequest {
                    order_id: order.order_id.clone(),
                },
                Some(&format!("Bearer {tampered}")),
            ))
            .await
            .is_err()
    );
    assert!(
        refused
            .user
            .get_user(with_authorization(
                GetUserRequest {
                    user_id: customer.user_id.clone(),
                },
                Some(&format!("Basic {second_token}")),
            ))
            .await
            .is_err()
    );
    let _ = login(&mut users, &customer.email, "a wrong password").await;
    system.notifications(&customer.user_id, 3).await;
    let staff_token = system.staff_token().await;

    // Collect every message the flow published.
    let mut messages = Vec::new();
    while let Some(received) = probe.next(std::time::Duration::from_millis(1500)).await {
        messages.push(received);
    }
    assert!(
        messages.len() >= 6,
        "the flow's events were captured: {}",
        messages.len()
    );
    let mut outbox_rows = String::new();
    for db in &system.databases {
        let pool = shop_shared::db::connect(&db.url, 1).await.unwrap();
        let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(o)::text FROM outbox o")
            .fetch_all(&pool)
            .await
            .unwrap();
        outbox_rows.push_str(&rows.join("\n"));
        pool.close().await;
    }
    system.stop().await;

    // Assert
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("logged in"),
        "the capture saw the services' logs"
    );
    let secrets = [
        ("the customer's token", customer.token.as_str()),
        ("the second token", second_token.as_str()),
        ("the tampered token", tampered.as_str()),
        ("the staff token", staff_token.as_str()),
        ("the password", PASSWORD),
    ];
    for (what, secret) in secrets {
        // The signature part alone is enough to give a token away.
        let needle = secret.rsplit('.').next().unwrap_or(secret);
        assert!(!logged.contains(needle), "{what} is in a log line");
        assert!(!outbox_rows.contains(needle), "{what} is in an outbox row");
        for m in &messages {
            let mut wire = Vec::new();
            write!(wire, "{:?}", m.properties).unwrap();
            wire.extend_from_slice(&m.body);
            assert!(
                !String::from_utf8_lossy(&wire).contains(needle),
                "{what} is in a {} message",
                m.routing_key
            );
        }
    }
}
