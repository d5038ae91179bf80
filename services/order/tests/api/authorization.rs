use shop_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderCreated, OrderStatus,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{WAIT, item, order_request, spawn_app};

#[tokio::test]
async fn a_customer_acts_on_their_own_orders_only_and_someone_elses_order_looks_missing() {
    // Arrange: Bob has an order; Ada is another customer.
    let mut app = spawn_app().await;
    let ada = app.known_customer().await;
    let bob = app.known_customer().await;
    let bobs = app.create(&bob, vec![item("a", 1, 10)]).await;
    let ada_id: Uuid = ada.parse().unwrap();
    let mut as_ada = app.client_with(&app.issuer.customer(ada_id)).await;

    // Act + Assert
    let place = as_ada
        .create_order(order_request(&bob, vec![item("a", 1, 10)]))
        .await
        .unwrap_err();
    assert_eq!(place.code(), Code::PermissionDenied);
    let list = as_ada
        .list_orders(ListOrdersRequest {
            customer_id: bob.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::PermissionDenied);
    let get = as_ada
        .get_order(GetOrderRequest {
            order_id: bobs.order_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::NotFound);
    let missing = as_ada
        .get_order(GetOrderRequest {
            order_id: Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        get.message(),
        missing.message(),
        "indistinguishable from a missing order"
    );
    let cancel = as_ada
        .cancel_order(CancelOrderRequest {
            order_id: bobs.order_id.clone(),
            reason: "mine now".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    assert_eq!(
        app.get(&bobs.order_id).await.status,
        OrderStatus::Pending as i32
    );

    // Her own: placed, listed, read and cancelled.
    let own = as_ada
        .create_order(order_request(&ada, vec![item("b", 1, 10)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let listed = as_ada
        .list_orders(ListOrdersRequest {
            customer_id: ada.clone(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert!(listed.iter().any(|o| o.order_id == own.order_id));
    as_ada
        .cancel_order(CancelOrderRequest {
            order_id: own.order_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn order_created_carries_the_caller_as_x_actor_id() {
    let mut app = spawn_app().await;
    let ada = app.known_customer().await;
    app.events.expect_event::<OrderCreated>(WAIT).await; // the probe order
    let ada_id: Uuid = ada.parse().unwrap();
    let mut as_ada = app.client_with(&app.issuer.customer(ada_id)).await;

    let order = as_ada
        .create_order(order_request(&ada, vec![item("a", 1, 10)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let (event, received) = app.events.expect_event::<OrderCreated>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(received.header("x-actor-id").as_deref(), Some(ada.as_str()));
}

#[tokio::test]
async fn every_call_without_a_valid_token_is_unauthenticated_before_anything_happens() {
    let mut app = spawn_app().await;
    let ada = app.known_customer().await;
    app.events.expect_event::<OrderCreated>(WAIT).await; // the probe order
    let mut client = app.client.clone();
    for (label, authorization) in
        shop_shared::testing::refused_authorizations(app.issuer.key(), Uuid::now_v7())
    {
        let request = shop_shared::testing::with_authorization(
            order_request(&ada, vec![item("a", 1, 10)]),
            authorization.as_deref(),
        );
        // The staff interceptor of `client` would add its own token: use a bare channel.
        let mut bare = shop_proto::order::v1::order_service_client::OrderServiceClient::new(
            shop_shared::testing::grpc_channel(app.grpc_addr).await,
        );
        let status = bare.create_order(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{label}: {status:?}");
    }
    assert!(
        app.events
            .next(std::time::Duration::from_millis(700))
            .await
            .is_none(),
        "no order was created"
    );
    // And the staff token still works.
    client
        .create_order(order_request(&ada, vec![item("a", 1, 10)]))
        .await
        .unwrap();
}
