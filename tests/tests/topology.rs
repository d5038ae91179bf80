//! The whole topology, declared by every service (docs/contract.md, "Events"): an event
//! published before its consumer first started waits in that consumer's queue.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shop::system::Addresses;
use shop_proto::order::v1::OrderStatus;
use shop_proto::user::v1::CreateUserRequest;
use shop_shared::testing::eventually;
use shop_tests::{Clients, PASSWORD, WAIT, login, order_request};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_customer_who_signed_up_before_the_order_service_first_started_is_known_to_it() {
    // Arrange: only the user service runs; the order service never started on this broker.
    let (mut config, broker, _databases) = shop_tests::test_config().await;
    let staff_email = config.user.auth.admin.as_ref().unwrap().email.clone();
    let shutdown = CancellationToken::new();
    let user = shop_user::Application::build(config.user).await.unwrap();
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut addresses = Addresses {
        user: user.grpc_addr(),
        order: unused,
        inventory: unused,
        notification: unused,
    };
    let user_http = user.http_addr();
    let user_task = tokio::spawn(user.run_until_stopped(shutdown.clone()));
    let clients = Clients::connect_lazy(addresses);

    // Act: a sign-up, then the order service's first start.
    let created = clients
        .user
        .clone()
        .create_user(CreateUserRequest {
            email: format!(
                "early-{}@example.com",
                broker.names.prefix.trim_end_matches('_')
            ),
            name: "Early Bird".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("the sign-up succeeds")
        .into_inner();
    let customer = created.user.expect("the created user").user_id;
    let conn = broker.connect("probe").await;
    let channel = conn.create_channel().await.unwrap();
    let queue = broker.names.queue("order");
    eventually(WAIT, "user.created waiting in the order queue", || async {
        let declared = channel
            .queue_declare(
                &queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (declared.message_count() >= 1).then_some(())
    })
    .await;
    config.order.service.auth.jwks_url = shop::system::jwks_url(user_http);
    let order = shop_order::Application::build(config.order).await.unwrap();
    addresses.order = order.grpc_addr();
    let order_task = tokio::spawn(order.run_until_stopped(shutdown.clone()));

    // Assert: the order service knows the customer (CreateOrder is not FAILED_PRECONDITION).
    let staff = Clients::connect_lazy(addresses);
    let token = login(&mut staff.user.clone(), &staff_email, PASSWORD)
        .await
        .expect("the staff account logs in")
        .access_token;
    staff.token.set(&token).unwrap();
    let placed = eventually(WAIT, "an order accepted for the early customer", || {
        let mut orders = staff.order.clone();
        let request = order_request(&customer, &[("early-product", 1)]);
        async move { orders.create_order(request).await.ok() }
    })
    .await
    .into_inner();
    assert_eq!(
        placed.order.expect("the order").status(),
        OrderStatus::Pending
    );

    shutdown.cancel();
    for task in [user_task, order_task] {
        task.await.unwrap().unwrap();
    }
    let _ = conn.close(200, "test done").await;
}
