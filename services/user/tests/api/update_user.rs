use shop_proto::user::v1::{UpdateUserRequest, UserCreated, UserUpdated};
use tonic::Code;

use crate::helpers::{WAIT, spawn_app};

#[tokio::test]
async fn update_user_changes_the_name_and_publishes_only_what_changed() {
    // Arrange
    let mut app = spawn_app().await;
    let user = app.create_user("upd@example.com").await;
    app.events.expect_event::<UserCreated>(WAIT).await;

    // Act
    let updated = app
        .client
        .update_user(UpdateUserRequest {
            user_id: user.user_id.clone(),
            email: None,
            name: Some("Countess".into()),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();

    // Assert
    assert_eq!(updated.name, "Countess");
    assert_eq!(updated.email, "upd@example.com");
    let (event, _) = app.events.expect_event::<UserUpdated>(WAIT).await;
    assert_eq!(event.user_id, user.user_id);
    assert_eq!(event.name.as_deref(), Some("Countess"));
    assert_eq!(event.email, None);
    assert!(event.update_time.is_some());
}

#[tokio::test]
async fn update_user_returns_the_contract_errors() {
    let mut app = spawn_app().await;
    let a = app.create_user("a@example.com").await;
    app.create_user("b@example.com").await;

    let taken = app
        .client
        .update_user(UpdateUserRequest {
            user_id: a.user_id.clone(),
            email: Some("B@example.com".into()),
            name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);

    let invalid = app
        .client
        .update_user(UpdateUserRequest {
            user_id: a.user_id.clone(),
            email: Some("broken".into()),
            name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);

    let empty_name = app
        .client
        .update_user(UpdateUserRequest {
            user_id: a.user_id.clone(),
            email: None,
            name: Some(" ".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(empty_name.code(), Code::InvalidArgument);

    let missing = app
        .client
        .update_user(UpdateUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
            email: None,
            name: Some("x".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let malformed = app
        .client
        .update_user(UpdateUserRequest {
            user_id: "123".into(),
            email: None,
            name: None,
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}
