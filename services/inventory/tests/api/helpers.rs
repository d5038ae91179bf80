use std::time::Duration;

use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::inventory::v1::{AdjustStockRequest, GetStockRequest, StockLevel};
use shop_proto::order::v1::{LineItem, OrderCreated};
use shop_shared::auth::BearerToken;
use shop_shared::testing::TestIssuer;
use shop_shared::testing::{
    EventProbe, RunningUntilDropped, TestEnv, bearer, grpc_channel, spawn_service,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client sending a bearer token.
pub(crate) type Client = InventoryServiceClient<InterceptedService<Channel, BearerToken>>;

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
    pub(crate) env: TestEnv,
}

pub(crate) async fn spawn_app() -> TestApp {
    let env = TestEnv::new().await;
    let issuer = TestIssuer::start().await;
    let mut config = env.config("inventory");
    config.auth.jwks_url = issuer.jwks_url().to_owned();
    let events = EventProbe::bind(&env.broker, &["inventory.*"]).await;
    let app = shop_inventory::Application::build(shop_inventory::Config {
        service: config,
        reservation_retention: shop_inventory::config::default_reservation_retention(),
    })
    .await
    .expect("build the inventory service");
    let service = spawn_service((app.grpc_addr(), app.http_addr()), |s| {
        app.run_until_stopped(s)
    })
    .await;
    TestApp {
        client: InventoryServiceClient::with_interceptor(service.channel, bearer(&issuer.staff())),
        _running: service.running,
        issuer,
        grpc_addr: service.grpc_addr,
        events,
        env,
    }
}

pub(crate) fn order_created(items: &[(&str, i32)]) -> OrderCreated {
    OrderCreated {
        order_id: uuid::Uuid::now_v7().to_string(),
        customer_id: uuid::Uuid::now_v7().to_string(),
        items: items
            .iter()
            .map(|(p, q)| LineItem {
                product_id: (*p).into(),
                quantity: *q,
                unit_price_cents: 100,
            })
            .collect(),
        total_cents: 0,
        create_time: None,
    }
}

impl TestApp {
    /// A client sending `token`.
    #[allow(dead_code)]
    pub(crate) async fn client_with(&self, token: &str) -> Client {
        InventoryServiceClient::with_interceptor(grpc_channel(self.grpc_addr).await, bearer(token))
    }

    pub(crate) async fn stock_up(&mut self, product: &str, units: i64) -> StockLevel {
        self.client
            .adjust_stock(AdjustStockRequest {
                product_id: product.into(),
                delta: units,
            })
            .await
            .expect("AdjustStock succeeds")
            .into_inner()
            .stock
            .expect("a stock level")
    }

    pub(crate) async fn stock(&mut self, product: &str) -> (i64, i64) {
        let s = self
            .client
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
}
