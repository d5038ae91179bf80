use std::collections::HashSet;

use shop_proto::order::v1::ListOrdersRequest;
use tonic::Code;

use crate::helpers::{item, spawn_app};

#[tokio::test]
async fn list_orders_pages_through_every_order_newest_first() {
    // Arrange: the probe order plus five more.
    let mut app = spawn_app().await;
    let customer = app.known_customer().await;
    for i in 0..5 {
        app.create(&customer, vec![item(&format!("p{i}"), 1, 1)])
            .await;
    }

    // Act
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_orders(ListOrdersRequest {
                customer_id: customer.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.orders.clone());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }

    // Assert
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    let ids: Vec<String> = pages.concat().into_iter().map(|o| o.order_id).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 6, "no order twice, none missing");
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");
}

#[tokio::test]
async fn list_orders_rejects_a_bad_token_or_customer_id() {
    let mut app = spawn_app().await;
    let bad_token = app
        .client
        .list_orders(ListOrdersRequest {
            customer_id: uuid::Uuid::now_v7().to_string(),
            page_size: 10,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    let bad_customer = app
        .client
        .list_orders(ListOrdersRequest {
            customer_id: "x".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_customer.code(), Code::InvalidArgument);
}
