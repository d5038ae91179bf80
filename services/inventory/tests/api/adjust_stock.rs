use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest};
use tonic::Code;

use crate::helpers::spawn_app;

#[tokio::test]
async fn adjust_stock_creates_and_changes_a_product() {
    let mut app = spawn_app().await;
    let created = app.stock_up("apple", 10).await;
    assert_eq!((created.available, created.reserved), (10, 0));
    let after = app.stock_up("apple", -4).await;
    assert_eq!((after.product_id.as_str(), after.available), ("apple", 6));
    assert_eq!(app.stock("apple").await, (6, 0));
}

#[tokio::test]
async fn adjust_stock_below_zero_is_failed_precondition_and_changes_nothing() {
    let mut app = spawn_app().await;
    app.stock_up("pear", 3).await;
    let status = app
        .client
        .adjust_stock(AdjustStockRequest {
            product_id: "pear".into(),
            delta: -4,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(app.stock("pear").await, (3, 0));
    let new_product = app
        .client
        .adjust_stock(AdjustStockRequest {
            product_id: "ghost".into(),
            delta: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(new_product.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn adjust_stock_rejects_an_empty_id_a_zero_delta_and_an_overflow() {
    let mut app = spawn_app().await;
    app.stock_up("big", i64::MAX - 1).await;
    for (product_id, delta) in [("", 5), ("a", 0), ("big", 10)] {
        let status = app
            .client
            .adjust_stock(AdjustStockRequest {
                product_id: product_id.into(),
                delta,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{product_id:?} {delta}"
        );
    }
}

#[tokio::test]
async fn get_stock_of_an_unknown_product_is_not_found() {
    let mut app = spawn_app().await;
    let status = app
        .client
        .get_stock(GetStockRequest {
            product_id: "nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
