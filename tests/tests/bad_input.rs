//! Bad input over gRPC, for every RPC: each gets the status code docs/contract.md gives it, with a
//! message a caller can act on, never a panic or database text, and the services keep
//! serving. Includes what no generated client would send: random bytes as the body, bodies
//! over the size limit, invalid UTF-8 in metadata.

use bytes::{Buf, BufMut};
use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest};
use shop_proto::notification::v1::ListNotificationsRequest;
use shop_proto::order::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, LineItem, ListOrdersRequest,
};
use shop_proto::user::v1::{CreateUserRequest, GetUserRequest, LoginRequest, UpdateUserRequest};
use shop_tests::{TestSystem, order_request};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// What no status message may contain: it would leak the database to a caller.
const LEAKS: &[&str] = &[
    "sqlx",
    "SQLSTATE",
    "relation",
    "constraint",
    "postgres",
    "syntax",
];

fn check(what: &str, result: Result<impl std::fmt::Debug, tonic::Status>, expected: Code) {
    let status = match result {
        Ok(ok) => panic!("{what}: expected {expected:?}, got OK {ok:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), expected, "{what}: {}", status.message());
    assert!(
        !status.message().is_empty(),
        "{what}: a message a caller can act on"
    );
    for leak in LEAKS {
        assert!(
            !status
                .message()
                .to_lowercase()
                .contains(&leak.to_lowercase()),
            "{what}: leaks {leak:?}: {}",
            status.message()
        );
    }
}

fn huge(n: usize) -> String {
    "x".repeat(n)
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn item(product: &str, quantity: i32, price: i64) -> LineItem {
    LineItem {
        product_id: product.into(),
        quantity,
        unit_price_cents: price,
    }
}

#[tokio::test]
async fn every_user_rpc_answers_bad_input_with_the_contract_code() {
    let system = TestSystem::start().await;
    let mut users = system.clients.user.clone();
    let create = |email: &str, name: &str, password: &str| CreateUserRequest {
        email: email.into(),
        name: name.into(),
        password: password.into(),
        ..Default::default()
    };
    for (what, request) in [
        ("email without @", create("nope", "Ada", "long enough")),
        ("empty email", create("", "Ada", "long enough")),
        (
            "huge email",
            create(
                &format!("{}@example.com", huge(10_000)),
                "Ada",
                "long enough",
            ),
        ),
        ("empty name", create("a@example.com", "", "long enough")),
        (
            "huge name",
            create("a@example.com", &huge(100_000), "long enough"),
        ),
        ("short password", create("a@example.com", "Ada", "1234567")),
        (
            "huge password",
            create("a@example.com", "Ada", &huge(100_000)),
        ),
        (
            "NUL in email",
            create("a\0b@example.com", "Ada", "long enough"),
        ),
        (
            "NUL in name",
            create("a@example.com", "A\0da", "long enough"),
        ),
        (
            "newline in name",
            create("a@example.com", "A\nda", "long enough"),
        ),
        (
            "NUL in password",
            create("a@example.com", "Ada", "long\0enough"),
        ),
        ("NUL in metadata", {
            let mut request = create("a@example.com", "Ada", "long enough");
            request.metadata.insert("source".into(), "a\0b".into());
            request
        }),
        ("control in metadata key", {
            let mut request = create("a@example.com", "Ada", "long enough");
            request.metadata.insert("so\u{1b}urce".into(), "ab".into());
            request
        }),
        ("NUL in given name", {
            let mut request = create("a@example.com", "Ada", "long enough");
            request.given_name = Some("A\0".into());
            request
        }),
    ] {
        check(
            what,
            users.create_user(request).await,
            Code::InvalidArgument,
        );
    }
    for id in [
        "",
        "not-a-uuid",
        &huge(10_000),
        "00000000-0000-0000-0000-00000000000g",
    ] {
        check(
            "GetUser bad id",
            users.get_user(GetUserRequest { user_id: id.into() }).await,
            Code::InvalidArgument,
        );
    }
    check(
        "GetUser unknown",
        users.get_user(GetUserRequest { user_id: uuid() }).await,
        Code::NotFound,
    );
    let update = |id: String, email: Option<&str>, name: Option<&str>| UpdateUserRequest {
        user_id: id,
        email: email.map(Into::into),
        name: name.map(Into::into),
    };
    check(
        "UpdateUser bad id",
        users.update_user(update("x".into(), None, Some("n"))).await,
        Code::InvalidArgument,
    );
    check(
        "UpdateUser bad email",
        users.update_user(update(uuid(), Some("bad"), None)).await,
        Code::InvalidArgument,
    );
    check(
        "UpdateUser empty name",
        users.update_user(update(uuid(), None, Some(" "))).await,
        Code::InvalidArgument,
    );
    check(
        "UpdateUser NUL in name",
        users.update_user(update(uuid(), None, Some("a\0b"))).await,
        Code::InvalidArgument,
    );
    check(
        "UpdateUser NUL in email",
        users
            .update_user(update(uuid(), Some("a\0@example.com"), None))
            .await,
        Code::InvalidArgument,
    );
    check(
        "GetUser NUL in id",
        users
            .get_user(GetUserRequest {
                user_id: format!("{}\0", uuid()),
            })
            .await,
        Code::InvalidArgument,
    );
    for (what, email) in [
        ("Login NUL in email", "a\0b@example.com".to_owned()),
        (
            "Login 1 MB email",
            format!("{}@example.com", huge(1_000_000)),
        ),
        ("Login email without @", "nope".to_owned()),
    ] {
        check(
            what,
            users
                .login(LoginRequest {
                    email,
                    password: "long enough".into(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
    check(
        "Login NUL in password",
        users
            .login(LoginRequest {
                email: "a@example.com".into(),
                password: "long\0enough".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    check(
        "UpdateUser unknown",
        users.update_user(update(uuid(), None, Some("n"))).await,
        Code::NotFound,
    );
    system.stop().await;
}

#[tokio::test]
async fn every_order_rpc_answers_bad_input_with_the_contract_code() {
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    let mut orders = system.clients.order.clone();
    let with = |items: Vec<LineItem>| CreateOrderRequest {
        customer_id: customer.clone(),
        items,
        idempotency_key: String::new(),
    };
    let mut too_many = Vec::new();
    for i in 0..101 {
        too_many.push(item(&format!("p{i}"), 1, 1));
    }
    let mut huge_key = with(vec![item("a", 1, 1)]);
    huge_key.idempotency_key = huge(1_000);
    let mut bad_customer = with(vec![item("a", 1, 1)]);
    bad_customer.customer_id = "not-a-uuid".into();
    let mut nul_key = with(vec![item("a", 1, 1)]);
    nul_key.idempotency_key = "k\0".into();
    let mut control_key = with(vec![item("a", 1, 1)]);
    control_key.idempotency_key = "k\n1".into();
    for (what, request) in [
        ("no items", with(vec![])),
        ("zero quantity", with(vec![item("a", 0, 1)])),
        ("negative quantity", with(vec![item("a", -1, 1)])),
        ("minimum quantity", with(vec![item("a", i32::MIN, 1)])),
        ("negative price", with(vec![item("a", 1, -1)])),
        ("minimum price", with(vec![item("a", 1, i64::MIN)])),
        (
            "overflowing total",
            with(vec![item("a", i32::MAX, i64::MAX)]),
        ),
        (
            "overflowing sum",
            with(vec![item("a", 1, i64::MAX), item("b", 1, i64::MAX)]),
        ),
        ("101 items", with(too_many)),
        (
            "duplicate product",
            with(vec![item("a", 1, 1), item("a", 2, 1)]),
        ),
        ("empty product", with(vec![item("", 1, 1)])),
        ("huge product", with(vec![item(&huge(10_000), 1, 1)])),
        ("huge idempotency key", huge_key),
        ("bad customer id", bad_customer),
        ("NUL in product", with(vec![item("a\0b", 1, 1)])),
        ("escape in product", with(vec![item("a\u{1b}[0m", 1, 1)])),
        ("NUL in idempotency key", nul_key),
        ("newline in idempotency key", control_key),
    ] {
        check(
            what,
            orders.create_order(request).await,
            Code::InvalidArgument,
        );
    }
    check(
        "unknown customer",
        orders
            .create_order(order_request(&uuid(), &[("a", 1)]))
            .await,
        Code::FailedPrecondition,
    );
    check(
        "GetOrder bad id",
        orders
            .get_order(GetOrderRequest {
                order_id: "1".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    check(
        "GetOrder unknown",
        orders.get_order(GetOrderRequest { order_id: uuid() }).await,
        Code::NotFound,
    );
    let list = |customer: &str, size: i32, token: &str| ListOrdersRequest {
        customer_id: customer.into(),
        page_size: size,
        page_token: token.into(),
    };
    check(
        "ListOrders bad customer",
        orders.list_orders(list("x", 10, "")).await,
        Code::InvalidArgument,
    );
    check(
        "ListOrders bad token",
        orders.list_orders(list(&customer, 10, "garbage")).await,
        Code::InvalidArgument,
    );
    check(
        "ListOrders huge token",
        orders.list_orders(list(&customer, 10, &huge(10_000))).await,
        Code::InvalidArgument,
    );
    check(
        "ListOrders negative size",
        orders.list_orders(list(&customer, -1, "")).await,
        Code::InvalidArgument,
    );
    assert!(
        orders
            .list_orders(list(&customer, i32::MAX, ""))
            .await
            .is_ok(),
        "a huge page size is capped"
    );
    let cancel = |id: &str, reason: &str| CancelOrderRequest {
        order_id: id.into(),
        reason: reason.into(),
    };
    check(
        "CancelOrder bad id",
        orders.cancel_order(cancel("x", "r")).await,
        Code::InvalidArgument,
    );
    check(
        "CancelOrder unknown",
        orders.cancel_order(cancel(&uuid(), "r")).await,
        Code::NotFound,
    );
    check(
        "CancelOrder NUL in reason",
        orders.cancel_order(cancel(&uuid(), "changed\0mind")).await,
        Code::InvalidArgument,
    );
    check(
        "CancelOrder huge reason",
        orders.cancel_order(cancel(&uuid(), &huge(10_000))).await,
        Code::InvalidArgument,
    );
    system.stop().await;
}

#[tokio::test]
async fn inventory_and_notification_rpcs_answer_bad_input_with_the_contract_code() {
    let system = TestSystem::start().await;
    let mut inventory = system.clients.inventory.clone();
    let adjust = |id: &str, delta: i64| AdjustStockRequest {
        product_id: id.into(),
        delta,
    };
    check(
        "AdjustStock empty id",
        inventory.adjust_stock(adjust("", 1)).await,
        Code::InvalidArgument,
    );
    check(
        "AdjustStock zero",
        inventory.adjust_stock(adjust("a", 0)).await,
        Code::InvalidArgument,
    );
    check(
        "AdjustStock huge id",
        inventory.adjust_stock(adjust(&huge(10_000), 1)).await,
        Code::InvalidArgument,
    );
    for id in ["a\0b", "a\nb", "\u{7f}"] {
        check(
            "AdjustStock control character in id",
            inventory.adjust_stock(adjust(id, 1)).await,
            Code::InvalidArgument,
        );
        check(
            "GetStock control character in id",
            inventory
                .get_stock(GetStockRequest {
                    product_id: id.into(),
                })
                .await,
            Code::InvalidArgument,
        );
    }
    check(
        "AdjustStock below zero",
        inventory.adjust_stock(adjust("a", -1)).await,
        Code::FailedPrecondition,
    );
    inventory
        .adjust_stock(adjust("big", i64::MAX))
        .await
        .unwrap();
    check(
        "AdjustStock overflow",
        inventory.adjust_stock(adjust("big", i64::MAX)).await,
        Code::InvalidArgument,
    );
    check(
        "AdjustStock far below zero",
        inventory.adjust_stock(adjust("big", i64::MIN)).await,
        Code::FailedPrecondition,
    );
    for id in ["", "unknown", &huge(10_000)] {
        check(
            "GetStock",
            inventory
                .get_stock(GetStockRequest {
                    product_id: id.into(),
                })
                .await,
            Code::NotFound,
        );
    }
    let mut notifications = system.clients.notification.clone();
    let list = |user: &str, size: i32, token: &str| ListNotificationsRequest {
        user_id: user.into(),
        page_size: size,
        page_token: token.into(),
    };
    check(
        "ListNotifications bad user",
        notifications.list_notifications(list("x", 1, "")).await,
        Code::InvalidArgument,
    );
    check(
        "ListNotifications bad token",
        notifications
            .list_notifications(list(&uuid(), 1, "bad"))
            .await,
        Code::InvalidArgument,
    );
    check(
        "ListNotifications NUL in user",
        notifications.list_notifications(list("\0", 1, "")).await,
        Code::InvalidArgument,
    );
    check(
        "ListNotifications NUL in token",
        notifications
            .list_notifications(list(&uuid(), 1, "\0"))
            .await,
        Code::InvalidArgument,
    );
    check(
        "ListNotifications negative size",
        notifications
            .list_notifications(list(&uuid(), -5, ""))
            .await,
        Code::InvalidArgument,
    );
    system.stop().await;
}

/// Sends raw bytes as a request body.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawCoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

async fn raw_call(
    addr: std::net::SocketAddr,
    path: &'static str,
    body: Vec<u8>,
    token: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let channel = shop_shared::testing::grpc_channel(addr).await;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("the service is ready");
    grpc.unary(
        shop_shared::testing::authorized(body, token),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn random_bytes_oversized_bodies_and_bad_metadata_are_refused_and_the_services_keep_serving()
{
    let system = TestSystem::start().await;
    let a = system.addresses();
    // With a valid (staff) token, so that the body is what is refused.
    let token = system.staff_token().await;
    let rpcs: [(std::net::SocketAddr, &'static str); 11] = [
        (a.user, "/shop.user.v1.UserService/CreateUser"),
        (a.user, "/shop.user.v1.UserService/Login"),
        (a.user, "/shop.user.v1.UserService/GetUser"),
        (a.user, "/shop.user.v1.UserService/UpdateUser"),
        (a.order, "/shop.order.v1.OrderService/CreateOrder"),
        (a.order, "/shop.order.v1.OrderService/GetOrder"),
        (a.order, "/shop.order.v1.OrderService/ListOrders"),
        (a.order, "/shop.order.v1.OrderService/CancelOrder"),
        (
            a.inventory,
            "/shop.inventory.v1.InventoryService/AdjustStock",
        ),
        (a.inventory, "/shop.inventory.v1.InventoryService/GetStock"),
        (
            a.notification,
            "/shop.notification.v1.NotificationService/ListNotifications",
        ),
    ];
    // Not protobuf: a truncated varint and a field with an invalid wire type.
    let garbage = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
    ];
    // A string field (number 1) holding invalid UTF-8.
    let bad_utf8 = vec![0x0a, 0x02, 0xc3, 0x28];
    for (addr, path) in rpcs {
        check(
            path,
            raw_call(addr, path, garbage.clone(), &token).await,
            Code::InvalidArgument,
        );
        check(
            path,
            raw_call(addr, path, bad_utf8.clone(), &token).await,
            Code::InvalidArgument,
        );
        check(
            path,
            raw_call(addr, path, vec![0x0a; 2 * 1024 * 1024], &token).await,
            Code::ResourceExhausted,
        );
    }

    // Invalid UTF-8 and garbage in metadata: ignored (a fresh correlation id, a new trace).
    let mut request = tonic::Request::new(GetStockRequest {
        product_id: "nothing".into(),
    });
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-correlation-id",
        http::HeaderValue::from_bytes(&[0xff, 0xfe, 0x80]).unwrap(),
    );
    headers.insert(
        "traceparent",
        http::HeaderValue::from_bytes(b"00-zz-\xff-01").unwrap(),
    );
    *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
    check(
        "GetStock with bad metadata",
        system.clients.inventory.clone().get_stock(request).await,
        Code::NotFound,
    );

    // Every service still serves.
    let customer = system.customer().await;
    system.stock_up("after", 1).await;
    let order = system.order(&customer, &[("after", 1)]).await;
    assert_eq!(
        system.settled(&order.order_id).await.status,
        shop_proto::order::v1::OrderStatus::Confirmed as i32
    );
    system.stop().await;
}
