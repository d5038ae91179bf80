//! Authentication and authorization across the whole system (docs/contract.md, "Authentication
//! and authorization"): every protected RPC refuses every kind of bad token before it does
//! anything, customers reach only what is theirs, staff reach everything, the actor rides on
//! every event of a flow, keys rotate without a flag day, and the verifying services keep
//! working while the user service is down.

use std::time::Duration;

use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest};
use shop_proto::notification::v1::ListNotificationsRequest;
use shop_proto::order::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, OrderStatus};
use shop_proto::user::v1::{CreateUserRequest, GetUserRequest, UpdateUserRequest};
use shop_shared::auth::SigningKey;
use shop_shared::testing::{EventProbe, refused_authorizations, with_authorization};
use shop_tests::{Clients, PASSWORD, TestSystem, WAIT, login, order_request};
use tonic::Code;

/// The user service's current signing key, read from its database (only a test may).
async fn signing_key(system: &TestSystem) -> SigningKey {
    let pool = shop_shared::db::connect(&system.databases[0].url, 1)
        .await
        .unwrap();
    let der: Vec<u8> = sqlx::query_scalar(
        "SELECT private_key FROM signing_keys WHERE retired_at IS NULL \
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    SigningKey::from_pkcs8(&der).unwrap()
}

/// The code a call answered with (`Ok` for a success).
fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

/// A user database pool of the system.
async fn user_db(system: &TestSystem) -> sqlx::PgPool {
    shop_shared::db::connect(&system.databases[0].url, 2)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_protected_rpc_refuses_every_bad_token_with_unauthenticated_and_changes_nothing() {
    // Arrange: a customer with an order, a stocked product.
    let system = TestSystem::start().await;
    let customer = system.logged_in_customer().await;
    system.stock_up("kept", 5).await;
    let order = system.order(&customer.user_id, &[("kept", 1)]).await;
    system.settled(&order.order_id).await;
    let key = signing_key(&system).await;
    let bare = Clients::connect_lazy(system.addresses());
    let id = customer.user_id.clone();

    // Act + Assert: each refused kind of token on each protected RPC.
    for (label, auth) in refused_authorizations(&key, uuid::Uuid::now_v7()) {
        let auth = auth.as_deref();
        let mut c = bare.clone();
        let calls: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "GetUser",
                c.user
                    .get_user(with_authorization(
                        GetUserRequest {
                            user_id: id.clone(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "UpdateUser",
                c.user
                    .update_user(with_authorization(
                        UpdateUserRequest {
                            user_id: id.clone(),
                            email: None,
                            name: Some("Mallory".into()),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "CreateOrder",
                c.order
                    .create_order(with_authorization(order_request(&id, &[("kept", 1)]), auth))
                    .await
                    .map(drop),
            ),
            (
                "GetOrder",
                c.order
                    .get_order(with_authorization(
                        GetOrderRequest {
                            order_id: order.order_id.clone(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ListOrders",
                c.order
                    .list_orders(with_authorization(
                        ListOrdersRequest {
                            customer_id: id.clone(),
                            page_size: 10,
                            page_token: String::new(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "CancelOrder",
                c.order
                    .cancel_order(with_authorization(
                        CancelOrderRequest {
                            order_id: order.order_id.clone(),
                            reason: "forged".into(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "AdjustStock",
                c.inventory
                    .adjust_stock(with_authorization(
                        AdjustStockRequest {
                            product_id: "kept".into(),
                            delta: 100,
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "GetStock",
                c.inventory
                    .get_stock(with_authorization(
                        GetStockRequest {
                            product_id: "kept".into(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ListNotifications",
                c.notification
                    .list_notifications(with_authorization(
                        ListNotificationsRequest {
                            user_id: id.clone(),
                            page_size: 10,
                            page_token: String::new(),
                        },
                        auth,
                    ))
                    .await
                    .map(drop),
            ),
        ];
        for (rpc, result) in calls {
            let status = result.expect_err(&format!("{rpc} with {label} must be refused"));
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc} with {label}: {status:?}"
            );
        }
    }

    // Nothing changed.
    assert_eq!(system.stock("kept").await, (4, 1));
    let mut staff = system.clients.clone();
    let user = staff
        .user
        .get_user(GetUserRequest {
            user_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.name, "Test Customer");
    let orders = staff
        .order
        .list_orders(ListOrdersRequest {
            customer_id: id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    // The customer-known probe order and the one order: no forged one.
    assert_eq!(orders.len(), 2);
    assert!(
        orders
            .iter()
            .all(|o| o.status != OrderStatus::Cancelled as i32)
    );
    system.stop().await;
}

#[tokio::test]
async fn a_customer_reaches_only_their_own_user_orders_and_notifications_and_staff_reach_all() {
    // Arrange
    let system = TestSystem::start().await;
    let ada = system.logged_in_customer().await;
    let bob = system.logged_in_customer().await;
    system.stock_up("bobs-thing", 3).await;
    let bobs_order = system.order(&bob.user_id, &[("bobs-thing", 1)]).await;
    system.settled(&bobs_order.order_id).await;
    let mut as_ada = system.clients_as(&ada);

    // Act + Assert: Bob's things.
    let bob_id = bob.user_id.clone();
    assert_eq!(
        code(
            as_ada
                .user
                .get_user(GetUserRequest {
                    user_id: bob_id.clone()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            as_ada
                .user
                .update_user(UpdateUserRequest {
                    user_id: bob_id.clone(),
                    email: Some("ada-owns@example.com".into()),
                    name: None,
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            as_ada
                .order
                .create_order(order_request(&bob_id, &[("bobs-thing", 1)]))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            as_ada
                .order
                .list_orders(ListOrdersRequest {
                    customer_id: bob_id.clone(),
                    page_size: 10,
                    page_token: String::new(),
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            as_ada
                .order
                .get_order(GetOrderRequest {
                    order_id: bobs_order.order_id.clone(),
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            as_ada
                .order
                .cancel_order(CancelOrderRequest {
                    order_id: bobs_order.order_id.clone(),
                    reason: "not mine".into(),
                })
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            as_ada
                .notification
                .list_notifications(ListNotificationsRequest {
                    user_id: bob_id.clone(),
                    page_size: 10,
                    page_token: String::new(),
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            as_ada
                .inventory
                .adjust_stock(AdjustStockRequest {
                    product_id: "bobs-thing".into(),
                    delta: -2,
                })
                .await
        ),
        Code::PermissionDenied
    );
    // Any caller may read stock.
    assert_eq!(
        code(
            as_ada
                .inventory
                .get_stock(GetStockRequest {
                    product_id: "bobs-thing".into(),
                })
                .await
        ),
        Code::Ok
    );

    // Nothing of Bob's changed, and staff (the system's clients) reach all of it.
    assert_eq!(system.stock("bobs-thing").await, (2, 1));
    let settled = system.settled(&bobs_order.order_id).await;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    let mut staff = system.clients.clone();
    let bob_now = staff
        .user
        .get_user(GetUserRequest {
            user_id: bob_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(bob_now.email, bob.email);
    staff
        .order
        .cancel_order(CancelOrderRequest {
            order_id: bobs_order.order_id.clone(),
            reason: "staff refund".into(),
        })
        .await
        .unwrap();
    assert!(!system.notifications(&bob_id, 2).await.is_empty());
    system.stop().await;
}

#[tokio::test]
async fn every_event_of_a_customers_flow_carries_their_id_as_x_actor_id_and_a_sign_up_none() {
    // Arrange
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["#"]).await;
    system.stock_up("actor-sku", 5).await;

    // Act: an anonymous sign-up, then a saga and a cancellation by the customer.
    let customer = system.logged_in_customer().await;
    let mut mine = system.clients_as(&customer);
    let order = mine
        .order
        .create_order(order_request(&customer.user_id, &[("actor-sku", 2)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    system.settled(&order.order_id).await;
    mine.order
        .cancel_order(CancelOrderRequest {
            order_id: order.order_id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();

    // Assert
    let mut seen = std::collections::HashMap::new();
    let wanted = [
        "order.created",
        "inventory.reserved",
        "order.confirmed",
        "order.cancelled",
        "inventory.released",
    ];
    let deadline = std::time::Instant::now() + WAIT;
    while !wanted.iter().all(|k| seen.contains_key(*k)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let received = probe
            .expect(left, "the events of the customer's flow")
            .await;
        let order_id = match received.routing_key.as_str() {
            "user.created" => {
                let created: shop_proto::user::v1::UserCreated = received.decode();
                if created.user_id == customer.user_id {
                    assert_eq!(
                        received.header("x-actor-id"),
                        None,
                        "a sign-up has no actor"
                    );
                }
                continue;
            }
            "order.created" => {
                received
                    .decode::<shop_proto::order::v1::OrderCreated>()
                    .order_id
            }
            "order.confirmed" => {
                received
                    .decode::<shop_proto::order::v1::OrderConfirmed>()
                    .order_id
            }
            "order.cancelled" => {
                received
                    .decode::<shop_proto::order::v1::OrderCancelled>()
                    .order_id
            }
            "inventory.reserved" => {
                received
                    .decode::<shop_proto::inventory::v1::StockReserved>()
                    .order_id
            }
            "inventory.released" => {
                received
                    .decode::<shop_proto::inventory::v1::StockReleased>()
                    .order_id
            }
            _ => continue,
        };
        if order_id == order.order_id {
            seen.insert(received.routing_key.clone(), received.header("x-actor-id"));
        }
    }
    for key in wanted {
        assert_eq!(
            seen[key].as_deref(),
            Some(customer.user_id.as_str()),
            "{key} carries the customer as its actor"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn after_a_key_rotation_old_tokens_stay_valid_and_new_tokens_work_on_every_service() {
    // Arrange: a token of the first key, already used on every service.
    let system = TestSystem::start().await;
    let customer = system.logged_in_customer().await;
    let old = system.clients_as(&customer);
    let use_everywhere = |clients: Clients, user_id: String| async move {
        let mut c = clients;
        c.user
            .get_user(GetUserRequest {
                user_id: user_id.clone(),
            })
            .await?;
        c.order
            .list_orders(ListOrdersRequest {
                customer_id: user_id.clone(),
                page_size: 1,
                page_token: String::new(),
            })
            .await?;
        match c
            .inventory
            .get_stock(GetStockRequest {
                product_id: "none".into(),
            })
            .await
        {
            Err(s) if s.code() == Code::NotFound => {}
            other => {
                other?;
            }
        }
        c.notification
            .list_notifications(ListNotificationsRequest {
                user_id,
                page_size: 1,
                page_token: String::new(),
            })
            .await?;
        Ok::<(), tonic::Status>(())
    };
    use_everywhere(old.clone(), customer.user_id.clone())
        .await
        .unwrap();

    // Act: rotate (what `shop keys rotate` does), then log in again.
    let pool = user_db(&system).await;
    let rotation = shop_user::keys::rotate(&pool, Duration::from_secs(900))
        .await
        .unwrap();
    let mut users = system.clients.user.clone();
    let fresh = login(&mut users, &customer.email, PASSWORD)
        .await
        .unwrap()
        .access_token;
    assert_ne!(fresh, customer.token);

    // Assert: the new token (an unknown kid to the verifiers until they refetch) and the old
    // one are both accepted everywhere.
    let new = Clients::with_token(system.addresses(), &fresh);
    use_everywhere(new, customer.user_id.clone())
        .await
        .expect("a token of the new key works on every service");
    use_everywhere(old, customer.user_id.clone())
        .await
        .expect("a token of the retired key works until it expires");
    assert_eq!(rotation.retired.len(), 1);
    pool.close().await;
    system.stop().await;
}

#[tokio::test]
async fn the_verifying_services_keep_accepting_tokens_while_the_user_service_is_down() {
    // Arrange: the user service runs under a shutdown of its own.
    let (config, _broker, _dbs) = shop_tests::test_config().await;
    let staff_email = config.user.auth.admin.as_ref().unwrap().email.clone();
    let built = shop::system::BuiltSystem::build(config).await.unwrap();
    let addresses = built.addresses();
    let (user_stop, others_stop) = (
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let user_task = tokio::spawn(built.user.run_until_stopped(user_stop.clone()));
    let others = vec![
        tokio::spawn(built.order.run_until_stopped(others_stop.clone())),
        tokio::spawn(built.inventory.run_until_stopped(others_stop.clone())),
        tokio::spawn(built.notification.run_until_stopped(others_stop.clone())),
    ];
    let mut anonymous = Clients::connect_lazy(addresses);
    let staff_token = login(&mut anonymous.user, &staff_email, PASSWORD)
        .await
        .unwrap()
        .access_token;
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let user = anonymous
        .user
        .create_user(CreateUserRequest {
            email: email.clone(),
            name: "Offline".into(),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let customer_token = login(&mut anonymous.user, &email, PASSWORD)
        .await
        .unwrap()
        .access_token;
    // Every verifier has fetched the keys (a staff call on each).
    let mut staff = Clients::with_token(addresses, &staff_token);
    staff
        .inventory
        .adjust_stock(AdjustStockRequest {
            product_id: "offline-sku".into(),
            delta: 1,
        })
        .await
        .unwrap();
    staff
        .order
        .get_order(GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    staff
        .notification
        .list_notifications(ListNotificationsRequest {
            user_id: user.user_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap();

    // Act: the user service goes away.
    user_stop.cancel();
    user_task.await.unwrap().unwrap();

    // Assert: a token none of them has seen yet is verified with the cached keys.
    let mut customer = Clients::with_token(addresses, &customer_token);
    assert!(
        customer
            .user
            .get_user(GetUserRequest {
                user_id: user.user_id.clone()
            })
            .await
            .is_err()
    );
    customer
        .inventory
        .get_stock(GetStockRequest {
            product_id: "offline-sku".into(),
        })
        .await
        .expect("inventory verifies with its cached keys");
    customer
        .notification
        .list_notifications(ListNotificationsRequest {
            user_id: user.user_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("notification verifies with its cached keys");
    customer
        .order
        .list_orders(ListOrdersRequest {
            customer_id: user.user_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("order verifies with its cached keys");
    others_stop.cancel();
    for task in others {
        task.await.unwrap().unwrap();
    }
    if let Some(links) = built.links {
        links.close("test done").await;
    }
}
