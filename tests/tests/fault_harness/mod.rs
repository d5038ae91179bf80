//! The fault harness shared by `faults.rs` (one broker) and `cluster.rs` (a three-node
//! cluster): the real service binaries as subprocesses (`shop serve <service>`), load through
//! gRPC, one fault at a time while the load runs, then the invariants and one report line.
//! Each test binary uses part of it.
#![allow(dead_code)]

pub(crate) mod nodes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shop_proto::inventory::v1::AdjustStockRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::user::v1::CreateUserRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_shared::testing::{TestBroker, TestDatabase};
use sqlx::PgPool;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub(crate) const SERVICES: [&str; 4] = ["user", "order", "inventory", "notification"];
pub(crate) const PRODUCTS: usize = 5;
pub(crate) const STOCK_PER_PRODUCT: i64 = 150;
pub(crate) const DEADLINE: Duration = Duration::from_secs(90);
/// The staff account the user service makes at start; the harness logs in with it.
pub(crate) const STAFF_EMAIL: &str = "fault-staff@example.com";
pub(crate) const STAFF_PASSWORD: &str = "fault harness staff";

/// The `shop` binary next to this test binary's directory (target/<profile>/shop).
pub(crate) fn shop_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("shop");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin shop` first",
        bin.display()
    );
    bin
}

pub(crate) use shop_shared::testing::free_port;

/// `url` with its nodes (when it lists several) rotated by `seed`, so that processes connect
/// to different nodes first.
pub(crate) fn spread(url: &str, seed: u16) -> String {
    let mut nodes = shop_shared::messaging::connection::node_urls(url);
    let len = nodes.len();
    nodes.rotate_left(usize::from(seed) % len);
    nodes.join(",")
}

/// Four services as processes, on their own databases and broker prefix.
pub(crate) struct Cluster {
    broker: TestBroker,
    databases: HashMap<&'static str, TestDatabase>,
    ports: HashMap<&'static str, u16>,
    /// HTTP ports (the user service's serves the JWK Set the others verify with).
    http_ports: HashMap<&'static str, u16>,
    /// A staff token: the harness's calls are authenticated like everyone's.
    token: String,
    processes: HashMap<&'static str, Child>,
    /// Second replicas (scale-out): same databases and queues, their own gRPC ports.
    replicas: HashMap<&'static str, (u16, Child)>,
    /// The second replicas' HTTP ports (their own `/metrics`).
    replica_http_ports: HashMap<&'static str, u16>,
    pools: HashMap<&'static str, PgPool>,
    /// Orders accepted by loads a fault started itself.
    extra_accepted: Arc<Mutex<Vec<String>>>,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        Self::start_on(TestBroker::new()).await
    }

    /// The services on `broker` (a cluster's nodes, when its URL lists several).
    pub(crate) async fn start_on(broker: TestBroker) -> Self {
        let mut databases = HashMap::new();
        let mut ports = HashMap::new();
        let mut http_ports = HashMap::new();
        for service in SERVICES {
            databases.insert(service, TestDatabase::create().await);
            ports.insert(service, free_port());
            http_ports.insert(service, free_port());
            broker.track_service(
                service,
                &shop_shared::messaging::MessagingConfig::default().retry,
            );
            broker.track_service(service, &fast_retry());
        }
        let mut cluster = Self {
            broker,
            databases,
            ports,
            http_ports,
            token: String::new(),
            processes: HashMap::new(),
            replicas: HashMap::new(),
            replica_http_ports: HashMap::new(),
            pools: HashMap::new(),
            extra_accepted: Arc::default(),
        };
        for service in SERVICES {
            cluster.spawn(service);
        }
        for service in SERVICES {
            cluster.wait_serving(service).await;
            let pool = shop_shared::db::connect(&cluster.databases[service].url, 4)
                .await
                .unwrap();
            cluster.pools.insert(service, pool);
        }
        let mut users = UserServiceClient::new(cluster.channel("user").await);
        cluster.token = users
            .login(shop_proto::user::v1::LoginRequest {
                email: STAFF_EMAIL.into(),
                password: STAFF_PASSWORD.into(),
            })
            .await
            .expect("the staff account logs in")
            .into_inner()
            .access_token;
        cluster
    }

    /// `message` with the harness's staff token.
    pub(crate) fn authorized<T>(&self, message: T) -> tonic::Request<T> {
        shop_shared::testing::authorized(message, &self.token)
    }

    pub(crate) fn spawn(&mut self, service: &'static str) {
        let child = self.start_process(service, self.ports[service], self.http_ports[service], "");
        self.processes.insert(service, child);
    }

    /// Starts a second replica of `service` on a port of its own.
    pub(crate) fn spawn_replica(&mut self, service: &'static str) -> u16 {
        let port = free_port();
        let http_port = free_port();
        let child = self.start_process(service, port, http_port, "-replica");
        self.replicas.insert(service, (port, child));
        self.replica_http_ports.insert(service, http_port);
        port
    }

    pub(crate) fn kill_replica(&mut self, service: &'static str) {
        if let Some((_, mut child)) = self.replicas.remove(service) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn start_process(
        &self,
        service: &'static str,
        port: u16,
        http_port: u16,
        suffix: &str,
    ) -> Child {
        let upper = service.to_uppercase();
        let log = std::fs::File::create(self.log_path(service, suffix)).expect("a log file");
        Command::new(shop_binary())
            .args(["serve", service])
            .env(
                format!("{upper}_DATABASE_URL"),
                &self.databases[service].url,
            )
            .env(format!("{upper}_GRPC_ADDR"), format!("127.0.0.1:{port}"))
            .env(
                format!("{upper}_HTTP_ADDR"),
                format!("127.0.0.1:{http_port}"),
            )
            .env(
                "AUTH_JWKS_URL",
                format!(
                    "http://127.0.0.1:{}/.well-known/jwks.json",
                    self.http_ports["user"]
                ),
            )
            .env("SHOP_ADMIN_EMAIL", STAFF_EMAIL)
            .env("SHOP_ADMIN_PASSWORD", STAFF_PASSWORD)
            .env("AMQP_URL", spread(&self.broker.url, port))
            // On a cluster, every queue on every node.
            .env(
                "QUEUE_REPLICAS",
                shop_shared::messaging::connection::node_urls(&self.broker.url)
                    .len()
                    .to_string(),
            )
            .env("AMQP_PREFIX", &self.broker.names.prefix)
            .env("RETRY_BASE_MS", "200")
            .env("RETRY_FACTOR", "2")
            .env("RETRY_ATTEMPTS", "6")
            .env("OUTBOX_POLL_MS", "200")
            .env("PASSWORD_HASH_MEMORY_KIB", "64")
            .env("PASSWORD_HASH_ITERATIONS", "1")
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a service")
    }

    /// Deliveries each process of `service` applied (`messaging_process_duration_seconds`
    /// with outcome `applied`, from its own `/metrics`): the first process, then its replica.
    pub(crate) async fn applied_per_process(&self, service: &'static str) -> Vec<f64> {
        let mut ports = vec![self.http_ports[service]];
        ports.extend(self.replica_http_ports.get(service));
        let mut applied = Vec::new();
        for port in ports {
            let text = shop_shared::testing::scrape(SocketAddr::from(([127, 0, 0, 1], port))).await;
            applied.push(
                shop_shared::testing::parse_metrics(&text)
                    .iter()
                    .filter(|s| {
                        s.name == "messaging_process_duration_seconds_count"
                            && s.labels
                                .iter()
                                .any(|(k, v)| k == "outcome" && v == "applied")
                    })
                    .map(|s| s.value)
                    .sum(),
            );
        }
        applied
    }

    /// SIGKILL: no shutdown, no flush, nothing finished.
    pub(crate) fn kill(&mut self, service: &'static str) {
        if let Some(mut child) = self.processes.remove(service) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the process to exit: how long it took, or `None`
    /// when it was still running at the limit (it is killed then).
    pub(crate) async fn terminate(
        &mut self,
        service: &'static str,
        limit: Duration,
    ) -> Option<Duration> {
        let mut child = self.processes.remove(service)?;
        let start = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        while start.elapsed() < limit {
            if child.try_wait().ok().flatten().is_some() {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub(crate) fn addr(&self, service: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[service]))
    }

    pub(crate) async fn serving(&self, service: &str) -> bool {
        serving_at(self.addr(service)).await
    }
}

pub(crate) async fn serving_at(addr: SocketAddr) -> bool {
    {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            return false;
        };
        let Ok(channel) = endpoint
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
        else {
            return false;
        };
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == 1)
    }
}

pub(crate) async fn wait_serving_at(addr: SocketAddr) {
    let start = Instant::now();
    while !serving_at(addr).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{addr} never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Cluster {
    /// Waits until `service` reports SERVING; fails at once, with the end of its log, when its
    /// process has exited, and after 60 s otherwise.
    pub(crate) async fn wait_serving(&mut self, service: &'static str) -> f64 {
        let start = Instant::now();
        while !self.serving(service).await {
            let exited = self
                .processes
                .get_mut(service)
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "{service} exited ({status}) before it was SERVING; its log ends:\n{}",
                    self.log_tail(service, "")
                );
            }
            if start.elapsed() >= Duration::from_secs(60) {
                panic!(
                    "{service} never became SERVING in 60 s; its log ends:\n{}",
                    self.log_tail(service, "")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        start.elapsed().as_secs_f64()
    }

    /// Where a process of `service` writes its log (standard error).
    pub(crate) fn log_path(&self, service: &str, suffix: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}{service}{suffix}.log", self.broker.names.prefix))
    }

    /// The last 20 lines of that log.
    pub(crate) fn log_tail(&self, service: &str, suffix: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(service, suffix)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub(crate) async fn channel(&self, service: &str) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr(service)))
            .unwrap()
            .connect_lazy()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for service in SERVICES {
            self.kill(service);
            self.kill_replica(service);
        }
    }
}

pub(crate) fn fast_retry() -> shop_shared::messaging::RetryPolicy {
    shop_shared::messaging::RetryPolicy {
        base: Duration::from_millis(200),
        factor: 2,
        max_attempts: 6,
    }
}

/// Seeded customers and products, and a load that places orders until stopped.
pub(crate) struct Load {
    accepted: Arc<Mutex<Vec<String>>>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn seed(cluster: &Cluster) -> (Vec<String>, Vec<String>) {
    let mut users = UserServiceClient::new(cluster.channel("user").await);
    let mut customers = Vec::new();
    for i in 0..5 {
        let user = users
            .create_user(CreateUserRequest {
                email: format!("fault-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                name: format!("Fault {i}"),
                password: "correct horse battery".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        customers.push(user.user_id);
    }
    let mut inventory = InventoryServiceClient::new(cluster.channel("inventory").await);
    let products: Vec<String> = (0..PRODUCTS).map(|p| format!("fault-p{p}")).collect();
    for product in &products {
        inventory
            .adjust_stock(cluster.authorized(AdjustStockRequest {
                product_id: product.clone(),
                delta: STOCK_PER_PRODUCT,
            }))
            .await
            .unwrap();
    }
    // Wait until the order service knows every customer.
    let ids: Vec<uuid::Uuid> = customers.iter().map(|c| c.parse().unwrap()).collect();
    let start = Instant::now();
    loop {
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM customers WHERE customer_id = ANY($1)")
                .bind(&ids)
                .fetch_one(&cluster.pools["order"])
                .await
                .unwrap();
        if known as usize == ids.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "customers never reached the order service"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (customers, products)
}

impl Load {
    /// About 60 orders a second, 1–2 products each, until stopped. Calls that fail (the
    /// order service is down) are not accepted orders and are not counted as such.
    pub(crate) fn start(
        channel: tonic::transport::Channel,
        customers: Vec<String>,
        products: Vec<String>,
        token: String,
    ) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (accepted, sent, stop) = (accepted.clone(), sent.clone(), stop.clone());
            async move {
                let mut client = OrderServiceClient::new(channel);
                let run = uuid::Uuid::new_v4().simple().to_string();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let mut items = vec![shop_proto::order::v1::LineItem {
                        product_id: products[i % products.len()].clone(),
                        quantity: 1 + (i % 3) as i32,
                        unit_price_cents: 100,
                    }];
                    if i.is_multiple_of(2) {
                        items.push(shop_proto::order::v1::LineItem {
                            product_id: products[(i + 1) % products.len()].clone(),
                            quantity: 1,
                            unit_price_cents: 250,
                        });
                    }
                    let request = shop_proto::order::v1::CreateOrderRequest {
                        customer_id: customers[i % customers.len()].clone(),
                        items,
                        idempotency_key: format!("load-{run}-{i}"),
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    let call = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.create_order(shop_shared::testing::authorized(request, &token)),
                    );
                    if let Ok(Ok(response)) = call.await
                        && let Some(order) = response.into_inner().order
                    {
                        accepted.lock().unwrap().push(order.order_id);
                    }
                    tokio::time::sleep(Duration::from_millis(16)).await;
                }
            }
        });
        Self {
            accepted,
            sent,
            stop,
            task,
        }
    }

    pub(crate) async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let accepted = self.accepted.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), accepted)
    }
}

/// What the invariants found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    terminal: usize,
    lost: usize,
    duplicated: usize,
    problems: Vec<String>,
}

/// Waits for every accepted order to become terminal (or the deadline) and checks the
/// invariants from the services' own databases.
pub(crate) async fn check(cluster: &Cluster, accepted: &[String]) -> Outcome {
    // An idempotent retry returns an order already counted: count each order once.
    let mut accepted = accepted.to_vec();
    accepted.sort();
    accepted.dedup();
    let accepted = accepted.as_slice();
    let ids: Vec<uuid::Uuid> = accepted.iter().map(|id| id.parse().unwrap()).collect();
    let start = Instant::now();
    let mut outcome = Outcome::default();
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status = 'PENDING'",
        )
        .bind(&ids)
        .fetch_one(&cluster.pools["order"])
        .await
        .unwrap();
        let mut unpublished = 0;
        for service in SERVICES {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&cluster.pools[service])
                    .await
                    .unwrap();
            unpublished += n;
        }
        let notified: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT order_id) FROM notifications WHERE order_id = ANY($1)",
        )
        .bind(accepted)
        .fetch_one(&cluster.pools["notification"])
        .await
        .unwrap();
        if (pending == 0 && unpublished == 0 && notified as usize == accepted.len())
            || start.elapsed() > DEADLINE
        {
            if pending > 0 {
                outcome
                    .problems
                    .push(format!("{pending} orders still PENDING"));
            }
            if unpublished > 0 {
                outcome
                    .problems
                    .push(format!("{unpublished} outbox rows unpublished"));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE order_id = ANY($1) AND status <> 'PENDING'",
    )
    .bind(&ids)
    .fetch_one(&cluster.pools["order"])
    .await
    .unwrap();
    outcome.terminal = found as usize;
    outcome.lost = accepted.len() - outcome.terminal;
    if outcome.lost > 0 {
        outcome
            .problems
            .push(format!("{} accepted orders lost or stuck", outcome.lost));
    }

    // Stock: reserved = Σ confirmed quantities; available + reserved = what was put in.
    let confirmed: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT item->>'product_id', sum((item->>'quantity')::bigint)::bigint \
         FROM orders, jsonb_array_elements(items) item WHERE status = 'CONFIRMED' GROUP BY 1",
    )
    .fetch_all(&cluster.pools["order"])
    .await
    .unwrap()
    .into_iter()
    .collect();
    let stock: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT product_id, available, reserved FROM stock")
            .fetch_all(&cluster.pools["inventory"])
            .await
            .unwrap();
    for (product, available, reserved) in stock {
        let expected = confirmed.get(&product).copied().unwrap_or(0);
        if reserved != expected {
            outcome.duplicated += (reserved - expected).unsigned_abs() as usize;
            outcome.problems.push(format!(
                "{product}: reserved {reserved}, confirmed orders hold {expected}"
            ));
        }
        if available + reserved != STOCK_PER_PRODUCT {
            outcome.problems.push(format!(
                "{product}: available {available} + reserved {reserved} ≠ {STOCK_PER_PRODUCT}"
            ));
        }
    }
    // Exactly one notification per terminal order; none twice.
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT order_id FROM notifications WHERE order_id <> '' GROUP BY order_id HAVING count(*) > 1) d",
    )
    .fetch_one(&cluster.pools["notification"])
    .await
    .unwrap();
    if doubled > 0 {
        outcome.duplicated += doubled as usize;
        outcome
            .problems
            .push(format!("{doubled} orders notified more than once"));
    }
    for service in SERVICES {
        if !cluster.serving(service).await {
            outcome.problems.push(format!("{service} is not SERVING"));
        }
    }
    outcome
}

/// Places an order (retrying while the order service is unavailable) and waits until it is
/// terminal; returns the seconds that took and the order.
pub(crate) async fn recovery_seconds(
    cluster: &Cluster,
    customers: &[String],
    products: &[String],
) -> (f64, Vec<String>) {
    let start = Instant::now();
    let mut client = OrderServiceClient::new(cluster.channel("order").await);
    let request = shop_proto::order::v1::CreateOrderRequest {
        customer_id: customers[0].clone(),
        items: vec![shop_proto::order::v1::LineItem {
            product_id: products[0].clone(),
            quantity: 1,
            unit_price_cents: 1,
        }],
        idempotency_key: format!("recovery-probe-{}", uuid::Uuid::new_v4().simple()),
    };
    let order_id = loop {
        if let Ok(Ok(response)) = tokio::time::timeout(
            Duration::from_secs(2),
            client.create_order(cluster.authorized(request.clone())),
        )
        .await
            && let Some(order) = response.into_inner().order
        {
            break order.order_id;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the order service never accepted an order again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id: uuid::Uuid = order_id.parse().unwrap();
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1")
                .bind(id)
                .fetch_optional(&cluster.pools["order"])
                .await
                .ok()
                .flatten();
        if status.is_some_and(|s| s != "PENDING") {
            return (start.elapsed().as_secs_f64(), vec![order_id]);
        }
        if start.elapsed() > DEADLINE {
            return (start.elapsed().as_secs_f64(), vec![order_id]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One fault to inject.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// `rabbitmqctl close_all_connections`, twice in a row.
    CloseAllConnectionsTwice,
    /// `rabbitmqctl stop_app`, 2 s down, `start_app`.
    BrokerRestart,
    /// SIGKILL one service, restart it 1.5 s later.
    Kill(&'static str),
    /// `pg_terminate_backend` on every connection of every service database.
    TerminateDatabaseConnections,
    /// Poison on `order.created`: garbage bytes, a wrong `type`, a valid payload of the wrong
    /// type, a missing message_id. Each must land in the inventory's DLQ with its reason.
    Poison,
    /// Real `order.created` messages taken off the broker and delivered twice more (same
    /// message id), and an `order.cancelled` that arrives before its `order.created`.
    DuplicatesAndReorder,
    /// A second replica of every service joins (competing consumers, a second outbox relay,
    /// half of the CreateOrder calls), then every second replica is SIGKILLed mid-run.
    ScaleOut,
    /// Cluster: the node that leads the inventory's queue stops its app for 3 s.
    StopLeaderNode,
    /// Cluster: a node's Erlang VM is SIGKILLed, and started again 3 s later.
    KillNode,
    /// Cluster: one node's clients are cut off (listeners suspended, every connection closed)
    /// for 3 s; the node stays in the cluster.
    CutNode,
}

impl Fault {
    pub(crate) fn name(self) -> String {
        match self {
            Self::CloseAllConnectionsTwice => "close_all_connections x2".into(),
            Self::BrokerRestart => "broker stop_app/start_app".into(),
            Self::Kill(service) => format!("SIGKILL {service}"),
            Self::TerminateDatabaseConnections => "pg_terminate_backend".into(),
            Self::Poison => "poison messages".into(),
            Self::ScaleOut => "2 replicas each, 1 killed".into(),
            Self::DuplicatesAndReorder => "duplicates + reordered events".into(),
            Self::StopLeaderNode => "leader node stop_app".into(),
            Self::KillNode => "node SIGKILL".into(),
            Self::CutNode => "node cut off".into(),
        }
    }

    /// Injects the fault; returns a note for the report line (empty for most).
    pub(crate) async fn inject(self, cluster: &mut Cluster) -> String {
        let queue = cluster.broker.names.queue("inventory");
        match self {
            Self::StopLeaderNode => {
                let before = nodes::leader_of(&queue);
                nodes::ctl(&before, &["stop_app"]);
                tokio::time::sleep(Duration::from_secs(3)).await;
                nodes::ctl(&before, &["start_app"]);
                nodes::ctl(&before, &["await_startup"]);
                return nodes::after(&queue, &before).await;
            }
            Self::KillNode => {
                let before = nodes::leader_of(&queue);
                let victim = nodes::NODES
                    .into_iter()
                    .find(|n| *n != before)
                    .expect("another node");
                nodes::kill(victim);
                tokio::time::sleep(Duration::from_secs(3)).await;
                nodes::start_cluster();
                return format!("killed={victim} {}", nodes::after(&queue, &before).await);
            }
            Self::CutNode => {
                let before = nodes::leader_of(&queue);
                nodes::ctl(&before, &["suspend_listeners"]);
                nodes::ctl(
                    &before,
                    &["close_all_connections", "network cut (fault injection)"],
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
                nodes::ctl(&before, &["resume_listeners"]);
                return nodes::after(&queue, &before).await;
            }
            _ => {}
        }
        match self {
            Self::CloseAllConnectionsTwice => {
                rabbitmqctl(&["close_all_connections", "fault injection"]);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                rabbitmqctl(&["close_all_connections", "fault injection"]);
            }
            Self::BrokerRestart => {
                rabbitmqctl(&["stop_app"]);
                tokio::time::sleep(Duration::from_secs(2)).await;
                rabbitmqctl(&["start_app"]);
                rabbitmqctl(&["await_startup"]);
            }
            Self::Kill(service) => {
                cluster.kill(service);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                cluster.spawn(service);
                cluster.wait_serving(service).await;
            }
            Self::TerminateDatabaseConnections => {
                for service in SERVICES {
                    let database = cluster.databases[service].name.clone();
                    sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&database)
                    .execute(&cluster.pools[service])
                    .await
                    .unwrap();
                }
            }
            Self::Poison => inject_poison(cluster).await,
            Self::ScaleOut => scale_out(cluster).await,
            Self::DuplicatesAndReorder => duplicates_and_reorder(cluster).await,
            Self::StopLeaderNode | Self::KillNode | Self::CutNode => {}
        }
        String::new()
    }
}

pub(crate) async fn duplicates_and_reorder(cluster: &Cluster) {
    use shop_proto::order::v1::{LineItem, OrderCancelled, OrderCreated};
    use shop_shared::testing::{EventProbe, publish, publish_envelope};

    // Duplicates: ten real order.created, each delivered twice more with its message id.
    let mut probe = EventProbe::bind(&cluster.broker, &["order.created"]).await;
    for _ in 0..10 {
        let original = probe
            .expect(Duration::from_secs(20), "an order.created")
            .await;
        let copy = original.redelivery("order");
        publish_envelope(&cluster.broker, &copy).await;
        publish_envelope(&cluster.broker, &copy).await;
    }
    // Reordered: a cancellation before its order. The order does not exist in the order
    // service, so the stock invariant fails if the inventory reserves anything for it.
    let order_id = uuid::Uuid::now_v7().to_string();
    let (customers, products) = cluster_seed_ids(cluster).await;
    publish(
        &cluster.broker,
        &OrderCancelled {
            order_id: order_id.clone(),
            customer_id: customers[0].clone(),
            reason: "reordered".into(),
            ..Default::default()
        },
    )
    .await;
    publish(
        &cluster.broker,
        &OrderCreated {
            order_id,
            customer_id: customers[0].clone(),
            items: vec![LineItem {
                product_id: products[0].clone(),
                quantity: 3,
                unit_price_cents: 1,
            }],
            total_cents: 3,
            create_time: None,
        },
    )
    .await;
}

pub(crate) async fn scale_out(cluster: &mut Cluster) {
    let mut order_replica = None;
    for service in SERVICES {
        let port = cluster.spawn_replica(service);
        wait_serving_at(SocketAddr::from(([127, 0, 0, 1], port))).await;
        if service == "order" {
            order_replica = Some(port);
        }
    }
    // Both replicas of each consuming service are consumers of its one queue.
    // Counted from the consumer list: each consumer is one channel of one process.
    let listing = Command::new("rabbitmqctl")
        .args([
            "list_consumers",
            "-q",
            "--no-table-headers",
            "queue_name",
            "channel_pid",
        ])
        .output()
        .expect("rabbitmqctl list_consumers");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for service in ["order", "inventory", "notification"] {
        let queue = cluster.broker.names.queue(service);
        let consumers = listing
            .lines()
            .filter(|line| line.split_whitespace().next() == Some(queue.as_str()))
            .count();
        assert_eq!(consumers, 2, "{queue}: both replicas consume:\n{listing}");
    }
    // Half of the calls for two seconds go to the second order replica.
    let port = order_replica.expect("an order replica");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let (customers, products) = cluster_seed_ids(cluster).await;
    let extra = Load::start(channel, customers, products, cluster.token.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One replica of every service dies mid-run; what it held is redelivered to the other.
    for service in SERVICES {
        cluster.kill_replica(service);
    }
    let (_, accepted) = extra.finish().await;
    cluster.extra_accepted.lock().unwrap().extend(accepted);
}

/// The customers and products seeded for this cluster.
pub(crate) async fn cluster_seed_ids(cluster: &Cluster) -> (Vec<String>, Vec<String>) {
    let customers: Vec<String> = sqlx::query_scalar("SELECT customer_id::text FROM customers")
        .fetch_all(&cluster.pools["order"])
        .await
        .unwrap();
    let products: Vec<String> =
        sqlx::query_scalar("SELECT product_id FROM stock ORDER BY product_id")
            .fetch_all(&cluster.pools["inventory"])
            .await
            .unwrap();
    (customers, products)
}

pub(crate) async fn inject_poison(cluster: &Cluster) {
    use lapin::BasicProperties;
    use shop_proto::Event as _;
    use shop_proto::order::v1::OrderCreated;
    use shop_shared::messaging::{Envelope, EventContext, envelope};
    use shop_shared::testing::EventProbe;

    let mut dlq = EventProbe::queue(&cluster.broker, &cluster.broker.names.dlq("inventory")).await;
    let good =
        Envelope::new(&OrderCreated::default(), "fault", &EventContext::new_flow()).properties(1);
    let user = shop_proto::user::v1::UserCreated {
        user_id: uuid::Uuid::now_v7().to_string(),
        email: "x@example.com".into(),
        name: "x".into(),
        ..Default::default()
    };
    let poison: Vec<(&str, BasicProperties, Vec<u8>)> = vec![
        (
            "garbage bytes",
            good.clone().with_message_id("p-1".into()),
            vec![0xff, 0xff, 0xff, 0xff],
        ),
        (
            "wrong type property",
            good.clone()
                .with_message_id("p-2".into())
                .with_type("shop.order.v1.Nope".into()),
            vec![],
        ),
        (
            "valid payload of the wrong type",
            good.clone().with_message_id("p-3".into()),
            prost::Message::encode_to_vec(&user),
        ),
        (
            "missing message_id",
            BasicProperties::default().with_type(OrderCreated::TYPE_NAME.into()),
            vec![],
        ),
    ];
    let conn = cluster.broker.connect("poisoner").await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    for (_, properties, body) in &poison {
        channel
            .basic_publish(
                &cluster.broker.names.exchange(),
                OrderCreated::ROUTING_KEY,
                Default::default(),
                body,
                properties.clone(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = conn.close(200, "poisoned").await;
    for (what, ..) in &poison {
        let dead = dlq.expect(Duration::from_secs(30), what).await;
        let reason = dead.header(envelope::DEATH_REASON).unwrap_or_default();
        assert!(!reason.is_empty(), "{what}: dead-lettered with a reason");
        assert_eq!(
            dead.header(envelope::ORIGINAL_ROUTING_KEY).as_deref(),
            Some("order.created")
        );
    }
}

/// Runs `fault` while the load runs, then checks and reports.
pub(crate) async fn run_fault(fault: Fault) {
    shop_shared::testing::init_logs();
    run_fault_on(fault, Cluster::start().await).await;
}

/// Runs `fault` on the services of `cluster` while the load runs, then checks and reports;
/// returns the cluster, still running, for more questions.
pub(crate) async fn run_fault_on(fault: Fault, mut cluster: Cluster) -> Cluster {
    let name = fault.name();
    let (customers, products) = seed(&cluster).await;
    let load = Load::start(
        cluster.channel("order").await,
        customers.clone(),
        products.clone(),
        cluster.token.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // load before the fault
    let note = fault.inject(&mut cluster).await;
    // Recovery: from the end of the fault until an order placed after it is terminal.
    let recovery = recovery_seconds(&cluster, &customers, &products).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // more load after the fault
    let (sent, mut accepted) = load.finish().await;
    accepted.extend(recovery.1);
    accepted.extend(cluster.extra_accepted.lock().unwrap().drain(..));
    let outcome = check(&cluster, &accepted).await;
    let recovery = recovery.0;
    println!(
        "fault={name:<28} sent={:<5} accepted={:<5} terminal={:<5} lost={:<3} duplicated={:<3} recovery_s={recovery:.1}{}{note}",
        sent + 1,
        accepted.len(),
        outcome.terminal,
        outcome.lost,
        outcome.duplicated,
        if note.is_empty() { "" } else { " " },
    );
    assert!(
        outcome.problems.is_empty(),
        "{name}: {:?}",
        outcome.problems
    );
    assert!(!accepted.is_empty(), "{name}: the load placed no order");
    cluster
}

pub(crate) fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}
