use shop_proto::order::v1::{GetOrderRequest, OrderCreated, OrderStatus};
use tonic::Code;

use crate::helpers::{WAIT, item, order_request, spawn_app};

#[tokio::test]
async fn create_order_for_an_unknown_customer_is_failed_precondition() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .create_order(order_request(
            &uuid::Uuid::now_v7().to_string(),
            vec![item("a", 1, 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not known"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn create_order_returns_a_pending_order_and_publishes_order_created() {
    // Arrange
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    app.events.expect_event::<OrderCreated>(WAIT).await; // the probe order

    // Act
    let order = app
        .create(&customer, vec![item("apple", 3, 50), item("pear", 1, 120)])
        .await;

    // Assert
    assert_eq!(order.status, OrderStatus::Pending as i32);
    assert_eq!(order.total_cents, 270);
    assert_eq!(order.items.len(), 2);
    assert!(order.create_time.is_some() && order.update_time.is_some());
    let (event, received) = app.events.expect_event::<OrderCreated>(WAIT).await;
    assert_eq!(event.order_id, order.order_id);
    assert_eq!(event.customer_id, customer);
    assert_eq!(event.total_cents, 270);
    assert_eq!(event.items, order.items);
    assert_eq!(
        received.properties.app_id().as_ref().unwrap().as_str(),
        "order"
    );
}

#[tokio::test]
async fn create_order_rejects_every_invalid_request_with_invalid_argument() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    let many: Vec<_> = (0..101).map(|i| item(&format!("p{i}"), 1, 1)).collect();
    let cases = vec![
        ("no items", order_request(&customer, vec![])),
        (
            "zero quantity",
            order_request(&customer, vec![item("a", 0, 1)]),
        ),
        (
            "negative quantity",
            order_request(&customer, vec![item("a", -3, 1)]),
        ),
        (
            "negative price",
            order_request(&customer, vec![item("a", 1, -1)]),
        ),
        (
            "duplicate product",
            order_request(&customer, vec![item("a", 1, 1), item("a", 1, 1)]),
        ),
        ("too many items", order_request(&customer, many)),
        (
            "empty product",
            order_request(&customer, vec![item("", 1, 1)]),
        ),
        (
            "bad customer id",
            order_request("nope", vec![item("a", 1, 1)]),
        ),
    ];
    for (what, request) in cases {
        let status = app.client.create_order(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{what}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_retried_create_order_with_the_same_idempotency_key_returns_the_first_order() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    app.events.expect_event::<OrderCreated>(WAIT).await; // the probe order
    let mut request = order_request(&customer, vec![item("a", 1, 10)]);
    request.idempotency_key = "checkout-77".into();

    let first = app
        .client
        .create_order(request.clone())
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let second = app
        .client
        .create_order(request)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    assert_eq!(first.order_id, second.order_id);
    let (event, _) = app.events.expect_event::<OrderCreated>(WAIT).await;
    assert_eq!(event.order_id, first.order_id);
    assert!(
        app.events
            .next(std::time::Duration::from_millis(700))
            .await
            .is_none(),
        "one order.created only"
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_other_items_is_already_exists_and_creates_nothing() {
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    app.events.expect_event::<OrderCreated>(WAIT).await; // the probe order
    let mut first = order_request(&customer, vec![item("a", 1, 10)]);
    first.idempotency_key = "checkout-78".into();
    app.client.create_order(first.clone()).await.unwrap();
    app.events.expect_event::<OrderCreated>(WAIT).await;

    let mut other = first.clone();
    other.items = vec![item("a", 2, 10)];
    let status = app.client.create_order(other).await.unwrap_err();

    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(
        status.message().contains("was used for a different order"),
        "{status:?}"
    );
    assert!(
        app.events
            .next(std::time::Duration::from_millis(700))
            .await
            .is_none(),
        "nothing created"
    );
}

#[tokio::test]
async fn get_order_returns_invalid_argument_or_not_found() {
    let mut app = spawn_app().await;
    let bad = app
        .client
        .get_order(GetOrderRequest {
            order_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let missing = app
        .client
        .get_order(GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
