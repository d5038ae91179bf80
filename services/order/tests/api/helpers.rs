use std::sync::Arc;
use std::time::Duration;

use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::order::v1::{CreateOrderRequest, GetOrderRequest, LineItem, Order, OrderStatus};
use shop_proto::user::v1::UserCreated;
use shop_shared::auth::BearerToken;
use shop_shared::testing::TestIssuer;
use shop_shared::testing::{
    EventProbe, RunningUntilDropped, TestEnv, bearer, eventually, grpc_channel, publish,
    spawn_service,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client sending a bearer token.
pub(crate) type Client = OrderServiceClient<InterceptedService<Channel, BearerToken>>;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct TestApp {
    // First, so the service stops before its database and prefix are removed.
    _running: RunningUntilDropped,
    /// Sends a staff token: the tests' own calls may do everything.
    pub(crate) client: Client,
    /// Signs the tokens the service verifies (its JWK Set served over HTTP).
    pub(crate) issuer: TestIssuer,
    pub(crate) grpc_addr: std::net::SocketAddr,
    pub(crate) events: EventProbe,
    pub(crate) env: Arc<TestEnv>,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(
        Arc::new(TestEnv::new().await),
        shop_order::config::default_reservation_timeout(),
    )
    .await
}

/// The order service on `env`, its orders' deadlines `reservation_timeout` after CreateOrder.
pub(crate) async fn spawn_app_with(env: Arc<TestEnv>, reservation_timeout: Duration) -> TestApp {
    let issuer = TestIssuer::start().await;
    let mut config = env.config("order");
    config.auth.jwks_url = issuer.jwks_url().to_owned();
    let events = EventProbe::bind(&env.broker, &["order.*"]).await;
    let app = shop_order::Application::build(shop_order::Config {
        service: config,
        reservation_timeout,
    })
    .await
    .expect("build the order service");
    let service = spawn_service((app.grpc_addr(), app.http_addr()), |s| {
        app.run_until_stopped(s)
    })
    .await;
    TestApp {
        client: OrderServiceClient::with_interceptor(service.channel, bearer(&issuer.staff())),
        _running: service.running,
        issuer,
        grpc_addr: service.grpc_addr,
        events,
        env,
    }
}

pub(crate) fn item(product: &str, quantity: i32, price: i64) -> LineItem {
    LineItem {
        product_id: product.into(),
        quantity,
        unit_price_cents: price,
    }
}

pub(crate) fn order_request(customer_id: &str, items: Vec<LineItem>) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer_id.into(),
        items,
        idempotency_key: String::new(),
    }
}

impl TestApp {
    /// Stops the service (its database and prefix stay); returns them for another start.
    #[allow(dead_code)]
    pub(crate) fn stop(self) -> Arc<TestEnv> {
        let env = Arc::clone(&self.env);
        drop(self);
        env
    }

    /// A client sending `token`.
    #[allow(dead_code)]
    pub(crate) async fn client_with(&self, token: &str) -> Client {
        OrderServiceClient::with_interceptor(grpc_channel(self.grpc_addr).await, bearer(token))
    }

    /// A customer the order service knows: user.created published and applied.
    pub(crate) async fn known_customer(&mut self) -> String {
        let user_id = uuid::Uuid::now_v7().to_string();
        publish(
            &self.env.broker,
            &UserCreated {
                user_id: user_id.clone(),
                email: format!("{user_id}@example.com"),
                name: "Test".into(),
                ..Default::default()
            },
        )
        .await;
        // The customer is known once CreateOrder stops answering FAILED_PRECONDITION. The
        // probe order this creates (one, thanks to its idempotency key) is part of the test.
        let mut probe = order_request(&user_id, vec![item("probe", 1, 1)]);
        probe.idempotency_key = "known-customer-probe".into();
        let client = self.client.clone();
        eventually(WAIT, "the customer to be known", || {
            let mut client = client.clone();
            let probe = probe.clone();
            async move { client.create_order(probe).await.ok().map(|_| ()) }
        })
        .await;
        user_id
    }

    pub(crate) async fn create(&mut self, customer: &str, items: Vec<LineItem>) -> Order {
        self.client
            .create_order(order_request(customer, items))
            .await
            .expect("CreateOrder succeeds")
            .into_inner()
            .order
            .expect("an order")
    }

    pub(crate) async fn get(&mut self, order_id: &str) -> Order {
        self.client
            .get_order(GetOrderRequest {
                order_id: order_id.into(),
            })
            .await
            .expect("GetOrder succeeds")
            .into_inner()
            .order
            .expect("an order")
    }

    pub(crate) async fn wait_for_status(&mut self, order_id: &str, status: OrderStatus) -> Order {
        let client = self.client.clone();
        eventually(WAIT, &format!("order {order_id} to be {status:?}"), || {
            let mut c = client.clone();
            let id = order_id.to_owned();
            async move {
                let order = c
                    .get_order(GetOrderRequest { order_id: id })
                    .await
                    .ok()?
                    .into_inner()
                    .order?;
                (order.status == status as i32).then_some(order)
            }
        })
        .await
    }
}
