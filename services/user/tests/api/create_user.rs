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
