use shop_proto::user::v1::GetUserRequest;
use tonic::Code;

use crate::helpers::spawn_app;

#[tokio::test]
async fn get_user_returns_the_created_user() {
    let mut app = spawn_app().await;
    let created = app.create_user("get@example.com").await;
    let found = app
        .client
        .get_user(GetUserRequest {
            user_id: created.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(found, created);
}

#[tokio::test]
async fn get_user_returns_invalid_argument_for_a_malformed_id_and_not_found_for_an_unknown_one() {
    let mut app = spawn_app().await;
    let bad = app
        .client
        .get_user(GetUserRequest {
            user_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let unknown = app
        .client
        .get_user(GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
