use shop_proto::notification::v1::ListNotificationsRequest;
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderRejected};
use shop_proto::user::v1::UserUpdated;
use shop_proto::user::v2::{PersonName, UserCreated};
use shop_shared::testing::publish;
use tonic::Code;

use crate::helpers::spawn_app;

fn user(user_id: &str) -> UserCreated {
    UserCreated {
        user_id: user_id.into(),
        email: "ada@example.com".into(),
        name: Some(PersonName {
            display_name: "Ada".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_new_user_gets_a_welcome_notification() {
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();

    let message_id = publish(&app.env.broker, &user(&user_id)).await;

    let list = app.wait_for(&user_id, 1).await;
    assert_eq!(list.len(), 1);
    let welcome = &list[0];
    assert_eq!(welcome.recipient, "ada@example.com");
    assert_eq!(welcome.channel, "email");
    assert_eq!(welcome.source_event_type, "shop.user.v2.UserCreated");
    assert_eq!(welcome.source_event_id, message_id);
    assert!(welcome.order_id.is_empty());
    assert!(welcome.create_time.is_some());
    assert_eq!(welcome.body, "Hello Ada, your shop account is ready.");
    // No mail server configured: recorded only, never sent.
    assert_eq!(
        welcome.delivery_status(),
        shop_proto::notification::v1::NotificationDelivery::Recorded
    );
    assert!(welcome.sent_time.is_none());
    assert_eq!(welcome.delivery_error, "");
}

#[tokio::test]
async fn the_welcome_greets_by_the_given_name_when_there_is_one() {
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();

    publish(
        &app.env.broker,
        &UserCreated {
            name: Some(PersonName {
                display_name: "Ada Lovelace".into(),
                given_name: "Ada".into(),
                family_name: "Lovelace".into(),
            }),
            ..user(&user_id)
        },
    )
    .await;

    let list = app.wait_for(&user_id, 1).await;
    assert_eq!(list[0].body, "Hello Ada, your shop account is ready.");
}

#[tokio::test]
async fn a_queue_bound_to_user_created_v1_by_an_earlier_version_is_unbound_at_start() {
    // Arrange: the service's queue, bound to user.created as an earlier version left it.
    let env = shop_shared::testing::TestEnv::new().await;
    let config = env.config("notification");
    let conn = env.broker.connect("old-version").await;
    let channel = conn.create_channel().await.unwrap();
    shop_shared::messaging::topology::declare_consumer(
        &channel,
        &env.broker.names,
        "notification",
        &["user.created"],
        &config.messaging.retry,
        config.messaging.queue_replicas,
    )
    .await
    .unwrap();
    conn.close(200, "declared").await.unwrap();
    let queue = env.broker.names.queue("notification");
    assert!(
        env.broker
            .bindings_of(&queue)
            .contains(&"user.created".to_owned())
    );

    // Act
    let app = crate::helpers::spawn_app_in(env).await;

    // Assert: bound to v2, no longer to v1.
    let bindings = app.env.broker.bindings_of(&queue);
    assert!(
        bindings.contains(&"user.created.v2".to_owned()),
        "{bindings:?}"
    );
    assert!(
        !bindings.contains(&"user.created".to_owned()),
        "{bindings:?}"
    );
}

#[tokio::test]
async fn every_order_outcome_notifies_the_customer_once() {
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();
    publish(&app.env.broker, &user(&user_id)).await;

    publish(
        &app.env.broker,
        &OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: user_id.clone(),
            total_cents: 1234,
            ..Default::default()
        },
    )
    .await;
    publish(
        &app.env.broker,
        &OrderRejected {
            order_id: "o-2".into(),
            customer_id: user_id.clone(),
            reason: "insufficient stock for a".into(),
            ..Default::default()
        },
    )
    .await;
    publish(
        &app.env.broker,
        &OrderCancelled {
            order_id: "o-3".into(),
            customer_id: user_id.clone(),
            reason: "changed my mind".into(),
            ..Default::default()
        },
    )
    .await;

    let list = app.wait_for(&user_id, 4).await;
    assert_eq!(list.len(), 4);
    let mut about: Vec<(String, String)> = list
        .iter()
        .filter(|n| !n.order_id.is_empty())
        .map(|n| (n.order_id.clone(), n.source_event_type.clone()))
        .collect();
    about.sort();
    assert_eq!(
        about,
        [
            ("o-1".into(), "shop.order.v1.OrderConfirmed".into()),
            ("o-2".into(), "shop.order.v1.OrderRejected".into()),
            ("o-3".into(), "shop.order.v1.OrderCancelled".into()),
        ]
    );
    let confirmed = list.iter().find(|n| n.order_id == "o-1").unwrap();
    assert!(confirmed.body.contains("12.34"), "{}", confirmed.body);
}

#[tokio::test]
async fn an_order_event_before_the_user_is_retried_until_the_contact_arrives() {
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();

    publish(
        &app.env.broker,
        &OrderConfirmed {
            order_id: "early".into(),
            customer_id: user_id.clone(),
            total_cents: 1,
            ..Default::default()
        },
    )
    .await;
    publish(&app.env.broker, &user(&user_id)).await;

    let list = app.wait_for(&user_id, 2).await;
    let early = list
        .iter()
        .find(|n| n.order_id == "early")
        .expect("the early order's notification");
    assert_eq!(early.recipient, "ada@example.com");
}

#[tokio::test]
async fn list_notifications_pages_and_rejects_bad_input() {
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();
    publish(&app.env.broker, &user(&user_id)).await;
    for i in 0..4 {
        publish(
            &app.env.broker,
            &OrderConfirmed {
                order_id: format!("o-{i}"),
                customer_id: user_id.clone(),
                total_cents: 1,
                ..Default::default()
            },
        )
        .await;
    }
    let all = app.wait_for(&user_id, 5).await;

    let first = app
        .client
        .list_notifications(ListNotificationsRequest {
            user_id: user_id.clone(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.notifications.len(), 3);
    let second = app
        .client
        .list_notifications(ListNotificationsRequest {
            user_id: user_id.clone(),
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.notifications.len(), 2);
    assert!(second.next_page_token.is_empty());
    let paged: Vec<_> = first
        .notifications
        .into_iter()
        .chain(second.notifications)
        .collect();
    assert_eq!(paged, all);

    for (user, token, size) in [
        ("nope", "", 1),
        (user_id.as_str(), "bad", 1),
        (user_id.as_str(), "", -1),
    ] {
        let status = app
            .client
            .list_notifications(ListNotificationsRequest {
                user_id: user.into(),
                page_size: size,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert!(app.list(&uuid::Uuid::now_v7().to_string()).await.is_empty());
}

#[tokio::test]
async fn an_older_user_update_arriving_after_a_newer_one_changes_nothing() {
    // Arrange: a user, then an update, then an update made *before* it that arrives late.
    let mut app = spawn_app().await;
    let user_id = uuid::Uuid::now_v7().to_string();
    let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    publish(&app.env.broker, &user(&user_id)).await;
    let update = |email: &str, name: Option<&str>, seconds| UserUpdated {
        user_id: user_id.clone(),
        email: Some(email.into()),
        name: name.map(Into::into),
        update_time: Some(at(seconds)),
    };
    publish(
        &app.env.broker,
        &update("new@example.com", None, 2_000_000_000),
    )
    .await;
    publish(
        &app.env.broker,
        &update("old@example.com", Some("Ada L."), 1_900_000_000),
    )
    .await;

    // Act: an order event, sent to the contact as it stands.
    publish(
        &app.env.broker,
        &OrderConfirmed {
            order_id: "o-1".into(),
            customer_id: user_id.clone(),
            total_cents: 100,
            ..Default::default()
        },
    )
    .await;

    // Assert: the newer email is kept; the older event's name, which nothing newer set, is taken.
    let list = app.wait_for(&user_id, 2).await;
    let confirmed = list
        .iter()
        .find(|n| n.order_id == "o-1")
        .expect("the order notification");
    assert_eq!(confirmed.recipient, "new@example.com");
    assert!(
        confirmed.body.starts_with("Hello Ada L.,"),
        "{}",
        confirmed.body
    );
}
