use shop_proto::user::v1::{GetUserRequest, UpdateUserRequest};
use tonic::Code;

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn a_customer_reads_and_changes_only_their_own_user() {
    // Arrange
    let mut app = spawn_app().await;
    let ada = app.create_user("ada@example.com").await;
    let bob = app.create_user("bob@example.com").await;
    let token = app
        .login("ada@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    let mut as_ada = app.client_with(&token).await;

    // Act + Assert: her own user.
    let own = as_ada
        .get_user(GetUserRequest {
            user_id: ada.user_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(own.into_inner().user.unwrap(), ada);

    // Someone else's: PERMISSION_DENIED for reading and changing, and nothing changes.
    let read = as_ada
        .get_user(GetUserRequest {
            user_id: bob.user_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied);
    let change = as_ada
        .update_user(UpdateUserRequest {
            user_id: bob.user_id.clone(),
            email: None,
            name: Some("Mallory".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(change.code(), Code::PermissionDenied);
    let unknown = as_ada
        .get_user(GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::PermissionDenied, "no probing for ids");
    let still = app
        .client
        .get_user(GetUserRequest {
            user_id: bob.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(still.name, "Ada Lovelace");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM users WHERE user_id = $1::uuid")
        .bind(&bob.user_id)
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(names, ["Ada Lovelace"]);

    // Her own change goes through.
    let renamed = as_ada
        .update_user(UpdateUserRequest {
            user_id: ada.user_id.clone(),
            email: None,
            name: Some("Ada King".into()),
        })
        .await
        .unwrap();
    assert_eq!(renamed.into_inner().user.unwrap().name, "Ada King");
}

#[tokio::test]
async fn protected_calls_without_a_token_are_unauthenticated_and_create_user_needs_none() {
    let mut app = spawn_app().await;
    let ada = app.create_user("ada@example.com").await;
    let status = app
        .anonymous
        .get_user(GetUserRequest {
            user_id: ada.user_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // Sign-up works without a token.
    app.anonymous
        .create_user(crate::helpers::create_request("new@example.com"))
        .await
        .unwrap();
}
