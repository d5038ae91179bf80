//! A call meant for another service, made to the order service's port: the answer says which
//! service this is and where the one asked for is served, with or without a token.

use shop_proto::user::v1::LoginRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_shared::testing::grpc_channel;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_service_call_on_the_order_port_is_told_where_to_go() {
    let app = spawn_app().await;
    let mut users = UserServiceClient::new(grpc_channel(app.grpc_addr).await);

    let status = users
        .login(LoginRequest {
            email: "someone@example.com".into(),
            password: "a password".into(),
        })
        .await
        .expect_err("the order service does not serve Login");

    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert_eq!(
        status.message(),
        "shop.user.v1.UserService is not served here (this is the order service, serving \
         shop.order.v1.OrderService): it is the user service's, on port 50051 by default \
         (USER_GRPC_ADDR)"
    );
}
