use shop_proto::user::v1::UserCreated;
use tonic::Code;

use crate::helpers::{WAIT, create_request, spawn_app};

#[tokio::test]
async fn create_user_returns_the_user_and_publishes_user_created_without_the_password() {
    // Arrange
    let mut app = spawn_app().await;

    // Act: an anonymous sign-up (no token).
    let user = app
        .anonymous
        .create_user(create_request("ada@example.com"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    // Assert
    let id = uuid::Uuid::parse_str(&user.user_id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.name, "Ada Lovelace");
    assert!(user.create_time.is_some());
    // The staff account's own user.created may come first.
    let (event, received) = loop {
        let (event, received) = app.events.expect_event::<UserCreated>(WAIT).await;
        if event.user_id == user.user_id {
            break (event, received);
        }
    };
    assert_eq!(event.user_id, user.user_id);
    assert_eq!(
        received.header("x-actor-id"),
        None,
        "a sign-up has no caller, so no actor"
    );
    assert_eq!(event.email, "ada@example.com");
    assert_eq!(received.routing_key, "user.created");
    assert_eq!(
        received.properties.app_id().as_ref().unwrap().as_str(),
        "user"
    );
    let body = String::from_utf8_lossy(&received.body);
    assert!(
        !body.contains("correct horse"),
        "the password is never published"
    );
}

#[tokio::test]
async fn create_user_stores_only_an_argon2id_hash() {
    let mut app = spawn_app().await;
    let user = app.create_user("hash@example.com").await;
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1::uuid")
            .bind(&user.user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
}

#[tokio::test]
async fn create_user_rejects_invalid_input_with_invalid_argument() {
    let mut app = spawn_app().await;
    let cases = [
        ("not-an-email", "Ada", "long enough", "email"),
        ("", "Ada", "long enough", "email"),
        ("ada@example.com", "   ", "long enough", "name"),
        ("ada@example.com", "Ada", "short", "password"),
        ("ada@example.com", "Ada", "", "password"),
    ];
    for (email, name, password, field) in cases {
        let status = app
            .client
            .create_user(shop_proto::user::v1::CreateUserRequest {
                email: email.into(),
                name: name.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .expect_err("invalid input is rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?} {name:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
}

#[tokio::test]
async fn create_user_returns_already_exists_for_an_email_taken_in_another_case() {
    let mut app = spawn_app().await;
    app.create_user("Grace@Example.com").await;
    let status = app
        .client
        .create_user(create_request("grace@EXAMPLE.com"))
        .await
        .expect_err("the email is taken");
    assert_eq!(status.code(), Code::AlreadyExists);
}

fn full_request(email: &str) -> shop_proto::user::v1::CreateUserRequest {
    shop_proto::user::v1::CreateUserRequest {
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        metadata: [("signup_source".to_owned(), "newsletter".to_owned())]
            .into_iter()
            .collect(),
        ..create_request(email)
    }
}

#[tokio::test]
async fn a_sign_up_publishes_user_created_in_both_shapes_with_one_message_id() {
    // Arrange: a probe of both shapes.
    let mut app = spawn_app().await;
    let mut probe = shop_shared::testing::EventProbe::bind(
        app.env_broker(),
        &["user.created", "user.created.v2"],
    )
    .await;

    // Act
    let user = app
        .anonymous
        .create_user(full_request("both@example.com"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    // Assert: both shapes of this user (the staff account's pair may come first).
    let mut ours = Vec::new();
    while ours.len() < 2 {
        let received = probe.expect(WAIT, "both shapes of user.created").await;
        if received.header("cloudEvents:subject").as_deref() == Some(user.user_id.as_str()) {
            ours.push(received);
        }
    }
    let (v1_received, v2_received) = (&ours[0], &ours[1]);
    let v1 = v1_received.decode::<UserCreated>();
    let v2 = v2_received.decode::<shop_proto::user::v2::UserCreated>();
    assert_eq!(v1_received.routing_key, "user.created");
    assert_eq!(v2_received.routing_key, "user.created.v2");
    assert_eq!(v1_received.meta().message_id, v2_received.meta().message_id);
    assert_eq!(v2_received.meta().message_type, "shop.user.v2.UserCreated");
    assert_eq!(v1.name, "Ada Lovelace");
    assert_eq!(v1.metadata.get("signup_source").unwrap(), "newsletter");
    assert_eq!(v2.user_id, user.user_id);
    assert_eq!(v2.email, "both@example.com");
    let name = v2.name.unwrap();
    assert_eq!(
        (
            name.display_name.as_str(),
            name.given_name.as_str(),
            name.family_name.as_str()
        ),
        ("Ada Lovelace", "Ada", "Lovelace")
    );
    assert_eq!(v2.metadata, v1.metadata);
    assert_eq!(v2.create_time, v1.create_time);
    for received in [v1_received, v2_received] {
        assert_eq!(
            received.header("cloudEvents:subject").as_deref(),
            Some(user.user_id.as_str())
        );
        assert_eq!(
            received.header("cloudEvents:source").as_deref(),
            Some("/shop/user")
        );
    }
    // Stored with the user.
    let (given, family, metadata): (Option<String>, Option<String>, serde_json::Value) =
        sqlx::query_as(
            "SELECT given_name, family_name, metadata FROM users WHERE user_id = $1::uuid",
        )
        .bind(&user.user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(given.as_deref(), Some("Ada"));
    assert_eq!(family.as_deref(), Some("Lovelace"));
    assert_eq!(
        metadata,
        serde_json::json!({ "signup_source": "newsletter" })
    );
}

/// Renames the user (UpdateUser as staff): a user.updated after their sign-up.
async fn rename(app: &mut crate::helpers::TestApp, user_id: &str) {
    app.client
        .update_user(shop_proto::user::v1::UpdateUserRequest {
            user_id: user_id.to_owned(),
            name: Some("Ada King".into()),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// What `probe` receives up to and including the first user.updated.
async fn until_updated(
    probe: &mut shop_shared::testing::EventProbe,
) -> Vec<shop_shared::testing::Received> {
    let mut received = Vec::new();
    loop {
        let next = probe
            .expect(WAIT, "the user's events up to user.updated")
            .await;
        let done = next.routing_key == "user.updated";
        received.push(next);
        if done {
            return received;
        }
    }
}

#[tokio::test]
async fn a_v1_only_consumer_of_user_star_receives_exactly_what_it_did_before() {
    // Arrange: `app.events` is bound to `user.*`, as a consumer written for v1 would be; the
    // v2's key has one more word and does not match.
    let mut app = spawn_app().await;

    // Act: a sign-up, then a change of the same user.
    let user = app.create_user("v1-only@example.com").await;
    rename(&mut app, &user.user_id).await;

    // Assert: user.created (v1), then user.updated: nothing else in between.
    let keys: Vec<String> = until_updated(&mut app.events)
        .await
        .into_iter()
        .map(|received| received.routing_key)
        .collect();
    assert!(
        keys.iter()
            .all(|k| k == "user.created" || k == "user.updated"),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| *k == "user.created").count(),
        2,
        "staff + the user: {keys:?}"
    );
}

#[tokio::test]
async fn metadata_outside_the_contract_limits_is_invalid_argument() {
    let mut app = spawn_app().await;
    let with = |pairs: Vec<(String, String)>| shop_proto::user::v1::CreateUserRequest {
        metadata: pairs.into_iter().collect(),
        ..create_request(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
    };
    let seventeen = (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    for (request, expected) in [
        (with(seventeen), "at most 16"),
        (with(vec![(String::new(), "v".into())]), "1 to 64"),
        (with(vec![("k".repeat(65), "v".into())]), "1 to 64"),
        (with(vec![("k".into(), "v".repeat(257))]), "at most 256"),
    ] {
        let status = app.anonymous.create_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(expected), "{}", status.message());
    }
    let sixteen = (0..16)
        .map(|i| (format!("k{i}"), "v".repeat(256)))
        .collect();
    app.anonymous
        .create_user(with(sixteen))
        .await
        .expect("16 entries are fine");
}

#[tokio::test]
async fn retiring_user_created_stops_the_v1_and_nothing_else() {
    // Arrange: RETIRED_ROUTING_KEYS=user.created.
    let mut app = crate::helpers::spawn_app_with(|config| {
        config.service.messaging.retired =
            shop_shared::messaging::Retired::parse("user.created").unwrap();
    })
    .await;
    let mut probe = shop_shared::testing::EventProbe::bind(
        app.env_broker(),
        &["user.created", "user.created.v2", "user.updated"],
    )
    .await;

    // Act
    let user = app.create_user("retired@example.com").await;
    rename(&mut app, &user.user_id).await;

    // Assert: the v2 and the update, never a v1.
    let received = until_updated(&mut probe).await;
    let keys: Vec<&str> = received.iter().map(|r| r.routing_key.as_str()).collect();
    let ours = received.iter().any(|r| {
        r.routing_key == "user.created.v2"
            && r.decode::<shop_proto::user::v2::UserCreated>().user_id == user.user_id
    });
    assert!(ours, "{keys:?}");
    assert!(!keys.contains(&"user.created"), "{keys:?}");
}
