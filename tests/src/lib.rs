//! System tests of shop: the four services in one process, each with its own fresh database,
//! all on one random broker prefix, driven through their gRPC clients like any caller.
//!
//! [`TestSystem::start`] is the entry point; the tests live in `tests/tests/`.

pub mod otlp;

use std::time::Duration;

use shop::system::{Addresses, BuiltSystem, SystemConfig};
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest};
use shop_proto::notification::v1::notification_service_client::NotificationServiceClient;
use shop_proto::notification::v1::{ListNotificationsRequest, Notification};
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::order::v1::{CreateOrderRequest, GetOrderRequest, LineItem, Order, OrderStatus};
use shop_proto::user::v1::CreateUserRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_shared::auth::BearerToken;
use shop_shared::testing::{TestBroker, TestDatabase, eventually, service_config};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel that sends the bearer token of its [`Clients`].
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// The password of every account the tests create.
pub const PASSWORD: &str = "correct horse battery";

/// How long an asynchronous outcome may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// gRPC clients of the four services, all sending one caller's token.
#[derive(Debug, Clone)]
pub struct Clients {
    /// UserService.
    pub user: UserServiceClient<AuthChannel>,
    /// OrderService.
    pub order: OrderServiceClient<AuthChannel>,
    /// InventoryService.
    pub inventory: InventoryServiceClient<AuthChannel>,
    /// NotificationService.
    pub notification: NotificationServiceClient<AuthChannel>,
    /// The token they send (none until set).
    pub token: BearerToken,
}

impl Clients {
    /// Clients of every service, sending no token yet; each connects on its first call (a
    /// service that is built but not running yet is not dialled before it is used).
    pub fn connect_lazy(a: Addresses) -> Self {
        let token = BearerToken::new();
        let channel = |addr: std::net::SocketAddr| {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("a valid endpoint")
                .connect_lazy()
        };
        Self {
            user: UserServiceClient::with_interceptor(channel(a.user), token.clone()),
            order: OrderServiceClient::with_interceptor(channel(a.order), token.clone()),
            inventory: InventoryServiceClient::with_interceptor(
                channel(a.inventory),
                token.clone(),
            ),
            notification: NotificationServiceClient::with_interceptor(
                channel(a.notification),
                token.clone(),
            ),
            token,
        }
    }

    /// Clients of every service sending `token`.
    pub fn with_token(a: Addresses, token: &str) -> Self {
        let clients = Self::connect_lazy(a);
        clients.token.set(token).expect("an ASCII token");
        clients
    }
}

/// Logs in through `users` and returns the access token.
pub async fn login(
    users: &mut UserServiceClient<AuthChannel>,
    email: &str,
    password: &str,
) -> Result<shop_proto::user::v1::LoginResponse, tonic::Status> {
    users
        .login(shop_proto::user::v1::LoginRequest {
            email: email.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A customer of a running system: their id, email and token.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The user id.
    pub user_id: String,
    /// The email they log in with.
    pub email: String,
    /// Their access token.
    pub token: String,
}

/// The whole system under test.
#[derive(Debug)]
pub struct TestSystem {
    /// Clients of every service.
    pub clients: Clients,
    /// The broker prefix every service uses.
    pub broker: TestBroker,
    /// The four databases: user, order, inventory, notification.
    pub databases: Vec<TestDatabase>,
    addresses: Addresses,
    /// Each service's HTTP port (JWKS, `/metrics`).
    pub http: Addresses,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<shop_shared::service::Drained>>>,
    held_back: Option<shop_inventory::Application>,
    /// The broker connections the services share, closed once they all stopped.
    links: Option<shop_shared::messaging::Links>,
    /// The staff account's email (its password is [`PASSWORD`]).
    pub staff_email: String,
    /// The user service's JWK Set.
    pub jwks_url: String,
}

/// Fresh databases and a fresh prefix for the four services.
pub async fn test_config() -> (SystemConfig, TestBroker, Vec<TestDatabase>) {
    shop_shared::testing::init_logs();
    let broker = TestBroker::new();
    let dbs = vec![
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestDatabase::create().await,
    ];
    let config = SystemConfig {
        user: shop_user::Config {
            service: service_config("user", &dbs[0], &broker),
            password: shop_user::config::PasswordHashing {
                memory_kib: 64,
                iterations: 1,
            },
            password_checks: shop_user::config::PasswordCheckLimits::default(),
            auth: shop_user::config::UserAuthConfig {
                admin: Some(shop_user::config::AdminAccount {
                    email: format!(
                        "staff-{}@example.com",
                        broker.names.prefix.trim_end_matches('_')
                    ),
                    password: PASSWORD.to_owned().into(),
                }),
                ..shop_user::config::UserAuthConfig::default()
            },
        },
        order: shop_order::Config {
            service: service_config("order", &dbs[1], &broker),
            reservation_timeout: shop_order::config::default_reservation_timeout(),
        },
        inventory: shop_inventory::Config {
            service: service_config("inventory", &dbs[2], &broker),
            reservation_retention: shop_inventory::config::default_reservation_retention(),
        },
        notification: shop_notification::Config {
            service: service_config("notification", &dbs[3], &broker),
            email: shop_notification::config::EmailConfig::default(),
        },
    };
    (config, broker, dbs)
}

impl TestSystem {
    /// Starts the four services.
    /// Its clients act as staff.
    pub async fn start() -> Self {
        let mut system = Self::start_holding_back_inventory().await;
        system.release_inventory();
        system
    }

    /// A staff token.
    pub async fn staff_token(&self) -> String {
        let mut users = self.clients.user.clone();
        login(&mut users, &self.staff_email, PASSWORD)
            .await
            .expect("the staff account logs in")
            .access_token
    }

    /// Builds all four services (every queue declared) but runs only user, order and
    /// notification: events for the inventory wait in its queue until
    /// [`TestSystem::release_inventory`].
    pub async fn start_holding_back_inventory() -> Self {
        let (config, broker, databases) = test_config().await;
        let staff_email = config
            .user
            .auth
            .admin
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default();
        let built = BuiltSystem::build(config).await.expect("build the system");
        let addresses = built.addresses();
        let http = built.http_addresses();
        let jwks_url = shop::system::jwks_url(built.user.http_addr());
        let clients = Clients::connect_lazy(addresses);
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(built.user.run_until_stopped(shutdown.clone())),
            tokio::spawn(built.order.run_until_stopped(shutdown.clone())),
            tokio::spawn(built.notification.run_until_stopped(shutdown.clone())),
        ];
        let system = Self {
            clients,
            broker,
            databases,
            addresses,
            http,
            shutdown,
            tasks,
            held_back: Some(built.inventory),
            links: built.links,
            staff_email,
            jwks_url,
        };
        // The test's own calls are made as staff, who may do everything.
        let staff = system.staff_token().await;
        system.clients.token.set(&staff).expect("an ASCII token");
        system
    }

    /// Starts the inventory if it was held back.
    pub fn release_inventory(&mut self) {
        if let Some(inventory) = self.held_back.take() {
            self.tasks.push(tokio::spawn(
                inventory.run_until_stopped(self.shutdown.clone()),
            ));
        }
    }

    /// Where each service listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Stops every service and checks none failed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            task.await
                .expect("no service panicked")
                .expect("every service stops cleanly");
        }
        if let Some(links) = self.links.take() {
            links.close("test done").await;
        }
    }

    /// Registers a user and waits until the order service knows them as a customer.
    pub async fn customer(&self) -> String {
        self.logged_in_customer().await.user_id
    }

    /// Registers a user, logs them in, and waits until the order service knows them.
    pub async fn logged_in_customer(&self) -> Customer {
        let mut users = self.clients.user.clone();
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let user = users
            .create_user(CreateUserRequest {
                email: email.clone(),
                name: "Test Customer".into(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .expect("CreateUser succeeds")
            .into_inner()
            .user
            .expect("a user");
        let token = login(&mut users, &email, PASSWORD)
            .await
            .expect("the new customer logs in")
            .access_token;
        self.wait_until_customer_known(&user.user_id).await;
        Customer {
            user_id: user.user_id,
            email,
            token,
        }
    }

    /// Clients acting as `customer`.
    pub fn clients_as(&self, customer: &Customer) -> Clients {
        Clients::with_token(self.addresses, &customer.token)
    }

    /// Waits until the order service applied `user.created` for `user_id`: CreateOrder
    /// answers FAILED_PRECONDITION until then.
    pub async fn wait_until_customer_known(&self, user_id: &str) {
        // A CreateOrder with an idempotency key that is only ever used here: once the customer
        // is known it creates one probe order for product "__probe__" with quantity 1; that
        // product never has stock, so the probe ends REJECTED and touches no real stock.
        let orders = self.clients.order.clone();
        let request = CreateOrderRequest {
            customer_id: user_id.into(),
            items: vec![LineItem {
                product_id: "__probe__".into(),
                quantity: 1,
                unit_price_cents: 0,
            }],
            idempotency_key: "__customer_known_probe__".into(),
        };
        eventually(
            WAIT,
            "the customer to be known to the order service",
            || {
                let mut orders = orders.clone();
                let request = request.clone();
                async move { orders.create_order(request).await.ok().map(|_| ()) }
            },
        )
        .await;
    }

    /// Puts `units` of `product` in stock.
    pub async fn stock_up(&self, product: &str, units: i64) {
        self.clients
            .inventory
            .clone()
            .adjust_stock(AdjustStockRequest {
                product_id: product.into(),
                delta: units,
            })
            .await
            .expect("AdjustStock succeeds");
    }

    /// `(available, reserved)` of a product.
    pub async fn stock(&self, product: &str) -> (i64, i64) {
        let s = self
            .clients
            .inventory
            .clone()
            .get_stock(GetStockRequest {
                product_id: product.into(),
            })
            .await
            .expect("GetStock succeeds")
            .into_inner()
            .stock
            .expect("a stock level");
        (s.available, s.reserved)
    }

    /// Places an order.
    pub async fn order(&self, customer: &str, items: &[(&str, i32)]) -> Order {
        self.clients
            .order
            .clone()
            .create_order(order_request(customer, items))
            .await
            .expect("CreateOrder succeeds")
            .into_inner()
            .order
            .expect("an order")
    }

    /// Waits until an order leaves PENDING, and returns it.
    pub async fn settled(&self, order_id: &str) -> Order {
        let orders = self.clients.order.clone();
        eventually(WAIT, &format!("order {order_id} to leave PENDING"), || {
            let mut orders = orders.clone();
            let order_id = order_id.to_owned();
            async move {
                let order = orders
                    .get_order(GetOrderRequest { order_id })
                    .await
                    .ok()?
                    .into_inner()
                    .order?;
                (order.status != OrderStatus::Pending as i32).then_some(order)
            }
        })
        .await
    }

    /// Waits until `user_id` has at least `count` notifications; returns them newest first.
    pub async fn notifications(&self, user_id: &str, count: usize) -> Vec<Notification> {
        let client = self.clients.notification.clone();
        eventually(
            WAIT,
            &format!("{count} notifications for {user_id}"),
            || {
                let mut client = client.clone();
                let user_id = user_id.to_owned();
                async move {
                    let list = client
                        .list_notifications(ListNotificationsRequest {
                            user_id,
                            page_size: 500,
                            page_token: String::new(),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .notifications;
                    (list.len() >= count).then_some(list)
                }
            },
        )
        .await
    }
}

/// A CreateOrder request with unit price 100 per item.
pub fn order_request(customer: &str, items: &[(&str, i32)]) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer.into(),
        items: items
            .iter()
            .map(|(p, q)| LineItem {
                product_id: (*p).into(),
                quantity: *q,
                unit_price_cents: 100,
            })
            .collect(),
        idempotency_key: String::new(),
    }
}

/// The names of the open connections whose name carries `broker`'s test prefix, sorted, as
/// the broker lists them (`rabbitmqctl list_connections`): how a system test sees how many
/// connections a whole process keeps.
pub fn own_connection_names(broker: &TestBroker) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "client_properties",
        ])
        .output()
        .expect("run rabbitmqctl list_connections");
    let listing = String::from_utf8_lossy(&out.stdout);
    let marker = "{\"connection_name\",\"";
    let mut names: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let start = line.find(marker)? + marker.len();
            let name = &line[start..];
            Some(name[..name.find('"')?].to_owned())
        })
        .filter(|name| name.starts_with(&broker.names.prefix))
        .collect();
    names.sort();
    names
}
