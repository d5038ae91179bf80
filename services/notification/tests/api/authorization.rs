use shop_proto::notification::v1::ListNotificationsRequest;
use shop_proto::user::v2::{PersonName, UserCreated};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_lists_only_their_own_notifications() {
    // Arrange: Bob has his welcome notification.
    let mut app = spawn_app().await;
    let bob = Uuid::now_v7();
    shop_shared::testing::publish(
        &app.env.broker,
        &UserCreated {
            user_id: bob.to_string(),
            email: "bob@example.com".into(),
            name: Some(PersonName {
                display_name: "Bob".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    app.wait_for(&bob.to_string(), 1).await;
    let request = |user: Uuid| ListNotificationsRequest {
        user_id: user.to_string(),
        page_size: 10,
        page_token: String::new(),
    };

    // Act
    let mut as_ada = app.client_with(&app.issuer.customer(Uuid::now_v7())).await;
    let refused = as_ada.list_notifications(request(bob)).await.unwrap_err();
    let mut as_bob = app.client_with(&app.issuer.customer(bob)).await;
    let own = as_bob.list_notifications(request(bob)).await.unwrap();

    // Assert
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(own.into_inner().notifications.len(), 1);
}
