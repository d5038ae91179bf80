//! Notifications emailed through a real SMTP server (aiosmtpd, from PyPI, started by the test:
//! `tests/smtp/smtp_server.py`), which refuses the recipients named for it: one email per
//! notification, after the commit; a 5xx refusal ends FAILED; a 4xx refusal is retried and then
//! sent once; a server that is down is retried until it comes back.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shop_proto::notification::v1::{Notification, NotificationDelivery};
use shop_proto::order::v1::{LineItem, OrderConfirmed, OrderRejected};
use shop_proto::user::v2::{PersonName, UserCreated};
use shop_shared::testing::{TestEnv, eventually, free_port, metric, publish, scrape};

use crate::helpers::{TestApp, WAIT, notifications_of, spawn_app_with_email};

/// A real SMTP server on 127.0.0.1, writing what it accepts to a file.
struct SmtpServer {
    port: u16,
    out: PathBuf,
    child: Child,
}

/// One email the server accepted.
#[derive(Debug, Clone)]
struct Received {
    rcpt_tos: Vec<String>,
    data: String,
}

impl SmtpServer {
    /// Starts the server on `port`, returning once it accepts connections.
    fn start(port: u16) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/smtp/smtp_server.py");
        let out = std::env::temp_dir().join(format!("shop-smtp-{}.jsonl", uuid::Uuid::new_v4()));
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 tests/smtp/smtp_server.py");
        let stdout = child.stdout.take().expect("its stdout");
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read its first line");
        assert!(
            first.starts_with("listening"),
            "the SMTP server did not start (is aiosmtpd installed? pip install aiosmtpd==1.4.6): {first:?}"
        );
        Self { port, out, child }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// What it accepted so far.
    fn received(&self) -> Vec<Received> {
        let Ok(text) = std::fs::read_to_string(&self.out) else {
            return Vec::new();
        };
        text.lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                Received {
                    rcpt_tos: value["rcpt_tos"]
                        .as_array()
                        .expect("rcpt_tos")
                        .iter()
                        .map(|r| r.as_str().unwrap_or_default().to_owned())
                        .collect(),
                    data: value["data"].as_str().expect("data").to_owned(),
                }
            })
            .collect()
    }

    /// What it accepted for `recipient`.
    fn received_by(&self, recipient: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.rcpt_tos.iter().any(|t| t == recipient))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

fn email_config(url: String, max_attempts: i32) -> shop_notification::config::EmailConfig {
    shop_notification::config::EmailConfig {
        smtp_url: Some(url),
        from: "shop <no-reply@shop.localhost>".into(),
        max_attempts,
        retry_base: Duration::from_millis(100),
    }
}

fn user(user_id: &str, email: &str) -> UserCreated {
    UserCreated {
        user_id: user_id.into(),
        email: email.into(),
        name: Some(PersonName {
            display_name: "Ada Lovelace".into(),
            given_name: "Ada".into(),
            family_name: "Lovelace".into(),
        }),
        ..Default::default()
    }
}

/// Waits until `user_id`'s notifications all have left PENDING (`count` of them).
async fn settled(app: &TestApp, user_id: &str, count: usize) -> Vec<Notification> {
    eventually(WAIT, &format!("{count} settled notifications"), || async {
        notifications_of(&app.client, user_id).await.filter(|list| {
            list.len() == count
                && list
                    .iter()
                    .all(|n| n.delivery_status() != NotificationDelivery::Pending)
        })
    })
    .await
}

#[tokio::test]
async fn a_confirmed_order_is_emailed_once_with_both_parts_the_lines_and_its_message_id() {
    // Arrange
    let smtp = SmtpServer::start(free_port());
    let app = spawn_app_with_email(TestEnv::new().await, email_config(smtp.url(), 8)).await;
    let user_id = uuid::Uuid::now_v7().to_string();
    publish(&app.env.broker, &user(&user_id, "ada@example.com")).await;
    let confirmed = OrderConfirmed {
        order_id: "o-42".into(),
        customer_id: user_id.clone(),
        total_cents: 459,
        items: vec![
            LineItem {
                product_id: "apple".into(),
                quantity: 3,
                unit_price_cents: 120,
            },
            LineItem {
                product_id: "pear".into(),
                quantity: 1,
                unit_price_cents: 99,
            },
        ],
    };

    // Act: the confirmation, then the same message again (a redelivery), then a rejection.
    let message_id = publish(&app.env.broker, &confirmed).await;
    let envelope = shop_shared::messaging::Envelope {
        message_id: uuid::Uuid::parse_str(&message_id).unwrap().into(),
        ..shop_shared::messaging::Envelope::new(
            &confirmed,
            "order",
            &shop_shared::messaging::EventContext::new_flow(),
        )
    };
    shop_shared::testing::publish_envelope(&app.env.broker, &envelope).await;
    publish(
        &app.env.broker,
        &OrderRejected {
            order_id: "o-43".into(),
            customer_id: user_id.clone(),
            reason: "insufficient stock for fig".into(),
            ..Default::default()
        },
    )
    .await;

    // Assert: three notifications, each SENT with its time, each emailed once.
    let list = settled(&app, &user_id, 3).await;
    for n in &list {
        assert_eq!(n.delivery_status(), NotificationDelivery::Sent, "{n:?}");
        assert!(n.sent_time.is_some(), "{n:?}");
        assert_eq!(n.delivery_error, "");
    }
    let emails = smtp.received_by("ada@example.com");
    assert_eq!(emails.len(), 3, "{emails:#?}");
    let order = list
        .iter()
        .find(|n| n.order_id == "o-42")
        .expect("the confirmation");
    let sent: Vec<&Received> = emails
        .iter()
        .filter(|e| {
            e.data
                .contains(&format!("Message-ID: <{}@shop>", order.notification_id))
        })
        .collect();
    assert_eq!(sent.len(), 1, "one email for the confirmation: {emails:#?}");
    let data = &sent[0].data;
    for expected in [
        "Subject: Your order is confirmed",
        "From: shop <no-reply@shop.localhost>",
        "To: ada@example.com",
        "Content-Type: multipart/alternative",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/html; charset=utf-8",
        "3 x apple at 1.20: 3.60",
        "Total: 4.59",
        "Hello Ada Lovelace, your order o-42 is confirmed.",
    ] {
        assert!(data.contains(expected), "{expected:?} in {data}");
    }
    assert!(
        order.body.contains("1 x pear at 0.99: 0.99"),
        "{}",
        order.body
    );
}

#[tokio::test]
async fn a_permanent_refusal_ends_failed_with_the_servers_answer() {
    let smtp = SmtpServer::start(free_port());
    let app = spawn_app_with_email(TestEnv::new().await, email_config(smtp.url(), 8)).await;
    let user_id = uuid::Uuid::now_v7().to_string();

    publish(&app.env.broker, &user(&user_id, "refuse-ada@example.com")).await;

    let list = settled(&app, &user_id, 1).await;
    assert_eq!(list[0].delivery_status(), NotificationDelivery::Failed);
    assert!(list[0].delivery_error.contains("550"), "{:?}", list[0]);
    assert!(list[0].sent_time.is_none());
    assert!(smtp.received().is_empty());
    let text = scrape(app.http_addr).await;
    let failed = [("channel", "email"), ("outcome", "failed")];
    assert_eq!(metric(&text, "shop_notifications_sent_total", &failed), 1.0);
}

#[tokio::test]
async fn a_refusal_for_now_is_retried_and_then_sent_once() {
    let smtp = SmtpServer::start(free_port());
    let app = spawn_app_with_email(TestEnv::new().await, email_config(smtp.url(), 8)).await;
    let user_id = uuid::Uuid::now_v7().to_string();
    // The server answers 451 twice for this address, then takes it.
    let address = "tempfail2-ada@example.com";

    publish(&app.env.broker, &user(&user_id, address)).await;

    let list = settled(&app, &user_id, 1).await;
    assert_eq!(
        list[0].delivery_status(),
        NotificationDelivery::Sent,
        "{:?}",
        list[0]
    );
    assert_eq!(smtp.received_by(address).len(), 1);
    let text = scrape(app.http_addr).await;
    let count = |outcome| {
        metric(
            &text,
            "shop_notifications_sent_total",
            &[("channel", "email"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (count("retried"), count("sent"), count("failed")),
        (2.0, 1.0, 0.0)
    );
    assert_eq!(metric(&text, "shop_notifications_pending", &[]), 0.0);
}

#[tokio::test]
async fn a_server_that_is_down_is_retried_until_it_comes_back() {
    // Arrange: nothing listens on the mail server's port yet.
    let port = free_port();
    let app = spawn_app_with_email(
        TestEnv::new().await,
        email_config(format!("smtp://127.0.0.1:{port}"), 100),
    )
    .await;
    let user_id = uuid::Uuid::now_v7().to_string();
    publish(&app.env.broker, &user(&user_id, "ada@example.com")).await;
    let tried = eventually(WAIT, "a failed attempt recorded", || async {
        notifications_of(&app.client, &user_id)
            .await?
            .into_iter()
            .find(|n| !n.delivery_error.is_empty())
    })
    .await;
    assert_eq!(
        tried.delivery_status(),
        NotificationDelivery::Pending,
        "{tried:?}"
    );

    // Act: the server comes up.
    let smtp = SmtpServer::start(port);

    // Assert
    let list = settled(&app, &user_id, 1).await;
    assert_eq!(
        list[0].delivery_status(),
        NotificationDelivery::Sent,
        "{:?}",
        list[0]
    );
    assert_eq!(smtp.received_by("ada@example.com").len(), 1);
}

#[tokio::test]
async fn a_server_that_stays_down_fails_the_notification_after_the_last_attempt() {
    let port = free_port();
    let app = spawn_app_with_email(
        TestEnv::new().await,
        email_config(format!("smtp://127.0.0.1:{port}"), 2),
    )
    .await;
    let user_id = uuid::Uuid::now_v7().to_string();

    publish(&app.env.broker, &user(&user_id, "ada@example.com")).await;

    let list = settled(&app, &user_id, 1).await;
    assert_eq!(list[0].delivery_status(), NotificationDelivery::Failed);
    assert!(
        list[0].delivery_error.contains("attempt 2 of 2, the last"),
        "{:?}",
        list[0]
    );
}
