//! `shop up` as a user runs it: the real binary, stopped with SIGTERM while orders flow. A
//! clean stop logs no ERROR or WARN line, ends with "shop stopped", exits 0 and leaves no
//! staged event unpublished; "shop is up" is logged only once every service answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shop_proto::inventory::v1::AdjustStockRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::order::v1::{CreateOrderRequest, LineItem};
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{CreateUserRequest, LoginRequest};
use shop_shared::testing::{TestBroker, TestDatabase, authorized, grpc_channel};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 4] = ["user", "order", "inventory", "notification"];
const STAFF_EMAIL: &str = "stop-staff@example.com";
const STAFF_PASSWORD: &str = "clean stop staff";
/// Orders accepted before the signal: enough that batches and rounds are in flight.
const ORDERS_BEFORE_STOP: usize = 150;
const DEADLINE: Duration = Duration::from_secs(60);

/// `shop up` on this test's databases, broker prefix and ports, its log in a file.
struct ShopUp {
    child: Child,
    log: PathBuf,
    grpc: HashMap<&'static str, SocketAddr>,
    databases: HashMap<&'static str, TestDatabase>,
    _broker: TestBroker,
}

impl ShopUp {
    async fn start() -> Self {
        let broker = TestBroker::new();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        command.arg("up");
        let (mut grpc, mut databases) = (HashMap::new(), HashMap::new());
        for service in SERVICES {
            let upper = service.to_uppercase();
            let database = TestDatabase::create().await;
            let addr = SocketAddr::from(([127, 0, 0, 1], shop_shared::testing::free_port()));
            command
                .env(format!("{upper}_DATABASE_URL"), &database.url)
                .env(format!("{upper}_GRPC_ADDR"), addr.to_string())
                .env(
                    format!("{upper}_HTTP_ADDR"),
                    format!("127.0.0.1:{}", shop_shared::testing::free_port()),
                );
            broker.track_service(
                service,
                &shop_shared::messaging::MessagingConfig::default().retry,
            );
            grpc.insert(service, addr);
            databases.insert(service, database);
        }
        let log = std::env::temp_dir().join(format!("{}shop-up.log", broker.names.prefix));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = command
            .env("AMQP_URL", &broker.url)
            .env("AMQP_PREFIX", &broker.names.prefix)
            .env("SHOP_ADMIN_EMAIL", STAFF_EMAIL)
            .env("SHOP_ADMIN_PASSWORD", STAFF_PASSWORD)
            .env("PASSWORD_HASH_MEMORY_KIB", "64")
            .env("PASSWORD_HASH_ITERATIONS", "1")
            // The product's own default log filter, as a user sees it.
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("AUTH_JWKS_URL")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn shop up");
        Self {
            child,
            log,
            grpc,
            databases,
            _broker: broker,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for_log_line(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "shop up exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {needle:?} line within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for shop up") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "shop up did not exit within {DEADLINE:?} of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ShopUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn serving(addr: SocketAddr) -> bool {
    HealthClient::new(grpc_channel(addr).await)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

/// The level of a log line (`2026-…Z  WARN target: …`), if it has one.
fn level(line: &str) -> Option<&str> {
    line.split_whitespace()
        .nth(1)
        .filter(|l| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(l))
}

/// Places orders from a few concurrent callers until `stop`, counting the accepted ones.
fn start_load(
    addr: SocketAddr,
    token: String,
    customer: String,
    product: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|_| {
            let (token, customer, product) = (token.clone(), customer.clone(), product.clone());
            let (accepted, stop) = (accepted.clone(), stop.clone());
            tokio::spawn(async move {
                let mut orders = OrderServiceClient::new(grpc_channel(addr).await);
                while !stop.load(Ordering::Relaxed) {
                    let request = CreateOrderRequest {
                        customer_id: customer.clone(),
                        items: vec![LineItem {
                            product_id: product.clone(),
                            quantity: 1,
                            unit_price_cents: 100,
                        }],
                        idempotency_key: String::new(),
                    };
                    match orders.create_order(authorized(request, &token)).await {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        // The customer is not known yet, or the server is going away.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn a_stop_under_load_is_clean_and_leaves_nothing_unpublished() {
    let mut shop = ShopUp::start().await;
    shop.wait_for_log_line("shop is up").await;
    // "shop is up" means every service answers, not only that its port is bound.
    for service in SERVICES {
        assert!(
            serving(shop.grpc[service]).await,
            "{service} is not SERVING although shop logged that it is up"
        );
    }

    let mut users = UserServiceClient::new(grpc_channel(shop.grpc["user"]).await);
    let token = users
        .login(LoginRequest {
            email: STAFF_EMAIL.into(),
            password: STAFF_PASSWORD.into(),
        })
        .await
        .expect("the staff account logs in")
        .into_inner()
        .access_token;
    let customer = users
        .create_user(CreateUserRequest {
            email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            name: "Stopping Customer".into(),
            password: "a customer's password".into(),
            ..Default::default()
        })
        .await
        .expect("CreateUser")
        .into_inner()
        .user
        .expect("a user")
        .user_id;
    let product = format!("stop-{}", uuid::Uuid::new_v4().simple());
    InventoryServiceClient::new(grpc_channel(shop.grpc["inventory"]).await)
        .adjust_stock(authorized(
            AdjustStockRequest {
                product_id: product.clone(),
                delta: 1_000_000,
            },
            &token,
        ))
        .await
        .expect("AdjustStock");

    let (accepted, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = start_load(
        shop.grpc["order"],
        token,
        customer,
        product,
        accepted.clone(),
        stop.clone(),
    );
    let start = Instant::now();
    while accepted.load(Ordering::Relaxed) < ORDERS_BEFORE_STOP {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} orders accepted within {DEADLINE:?}:\n{}",
            accepted.load(Ordering::Relaxed),
            shop.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The signal arrives while orders are still being placed and events are in flight.
    shop.terminate();
    let status = shop.wait_exit().await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load task");
    }

    let log = shop.log();
    assert!(status.success(), "shop up exited with {status}:\n{log}");
    let noisy: Vec<&str> = log
        .lines()
        .filter(|line| matches!(level(line), Some("WARN" | "ERROR")) || line.contains("panicked"))
        .collect();
    assert!(
        noisy.is_empty(),
        "a clean stop logged {} ERROR/WARN line(s):\n{}",
        noisy.len(),
        noisy.join("\n")
    );
    let last = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.contains("shop stopped"),
        "the last line is not \"shop stopped\": {last}"
    );
    // The relay stops last: every event staged before the stop was published.
    for service in SERVICES {
        let pool = shop_shared::db::connect(&shop.databases[service].url, 1)
            .await
            .expect("the service's database");
        let unpublished: i64 =
            // Scheduled rows not yet due (the deadlines of orders still PENDING) wait for
            // their time, in the table: they are not events left behind.
            sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL \
                 AND (due_at IS NULL OR due_at <= now())",
            )
                .fetch_one(&pool)
                .await
                .expect("count the outbox");
        assert_eq!(
            unpublished, 0,
            "the {service} service stopped with staged events unpublished"
        );
        pool.close().await;
    }
}
