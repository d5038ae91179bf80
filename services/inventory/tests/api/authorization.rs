use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest, StockReserved};
use shop_shared::messaging::{Envelope, EventContext};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{WAIT, order_created, spawn_app};

#[tokio::test]
async fn only_staff_adjust_stock_and_any_caller_reads_it() {
    // Arrange
    let mut app = spawn_app().await;
    app.stock_up("sku-1", 5).await;
    let mut as_customer = app.client_with(&app.issuer.customer(Uuid::now_v7())).await;

    // Act
    let refused = as_customer
        .adjust_stock(AdjustStockRequest {
            product_id: "sku-1".into(),
            delta: 100,
        })
        .await
        .unwrap_err();
    let read = as_customer
        .get_stock(GetStockRequest {
            product_id: "sku-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stock
        .unwrap();

    // Assert
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(read.available, 5, "nothing changed");
    assert_eq!(app.stock("sku-1").await, (5, 0));
}

#[tokio::test]
async fn the_actor_of_order_created_rides_on_to_inventory_reserved() {
    // Arrange
    let mut app = spawn_app().await;
    app.stock_up("sku-2", 5).await;
    let actor = Uuid::now_v7().to_string();
    let context = EventContext {
        actor_id: Some(actor.clone()),
        ..EventContext::new_flow()
    };
    let created = order_created(&[("sku-2", 1)]);

    // Act
    shop_shared::testing::publish_envelope(
        &app.env.broker,
        &Envelope::new(&created, "order", &context),
    )
    .await;

    // Assert
    let (reserved, received) = app.events.expect_event::<StockReserved>(WAIT).await;
    assert_eq!(reserved.order_id, created.order_id);
    assert_eq!(
        received.header("x-actor-id").as_deref(),
        Some(actor.as_str())
    );
}
