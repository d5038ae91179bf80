//! The metrics as an operator meets them: a real Prometheus (Debian's `prometheus` package)
//! scrapes the four services' `/metrics`, loads the repository's alerting rules, and answers
//! PromQL through its HTTP API after a saga: the series arrive and mean what they say, and
//! every query of the Grafana dashboard (`deploy/grafana/dashboards/shop.json`) returns data.
//! `promtool` checks the rules, unit-tests the alerts and checks the compose scrape config.
//!
//! Ignored by default because it needs `prometheus` and `promtool` on the PATH
//! (`apt-get install prometheus`): `cargo test -p shop-tests --test prometheus -- --ignored`
//! (CI does).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shop_proto::order::v1::{GetOrderRequest, OrderStatus};
use shop_shared::testing::{eventually, http_get};
use shop_tests::TestSystem;
use tokio::process::{Child, Command};

/// Prometheus scrapes every second here; a query over `[1m]` needs a few scrapes.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .canonicalize()
        .expect("the deploy directory")
}

/// Runs a command to completion; panics with its output when it fails.
fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (install Debian's prometheus package)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// A Prometheus server of its own: a temporary data directory, a free port, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Prometheus {
    async fn start(targets: &[std::net::SocketAddr]) -> Self {
        let dir = TempDir::new();
        let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: [{targets}]\n",
            rules = deploy_dir().join("prometheus/alerts.yml").display(),
            targets = targets.join(", "),
        );
        let config_file = dir.path.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the scrape config");
        let port = shop_shared::testing::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus (install Debian's prometheus package)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(PROMETHEUS_WAIT, "Prometheus to be ready", || async {
            http_get(&format!("{url}/-/ready")).await.ok().map(|_| ())
        })
        .await;
        Self {
            child,
            url,
            _dir: dir,
        }
    }

    /// An instant query; `Err` with Prometheus's error for a query it refuses.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let body = http_get(&url).await.map_err(|e| format!("{e:#}"))?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(body);
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until `promql` returns at least one series whose value passes `accept`.
    async fn until(&self, promql: &str, accept: impl Fn(f64) -> bool) -> Vec<Value> {
        eventually(PROMETHEUS_WAIT, promql, || async {
            let result = self
                .query(promql)
                .await
                .unwrap_or_else(|e| panic!("{promql}: {e}"));
            result.iter().any(|s| accept(value(s))).then_some(result)
        })
        .await
    }

    async fn get(&self, path: &str) -> Value {
        let body = http_get(&format!("{}{path}", self.url))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:#}"));
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A series' value in an instant-query result.
fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("shop-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
#[ignore = "needs promtool: cargo test -p shop-tests --test prometheus -- --ignored"]
fn promtool_accepts_the_rules_their_tests_and_the_compose_scrape_config() {
    let dir = deploy_dir().join("prometheus");
    let checked = run("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 11 rules found"), "{checked}");
    let tested = run("promtool", &["test", "rules", "alerts_test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    run("promtool", &["check", "config", "prometheus.yml"], &dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus: cargo test -p shop-tests --test prometheus -- --ignored"]
async fn prometheus_scrapes_every_service_and_every_dashboard_query_answers() {
    // Arrange: the system, and Prometheus scraping its four HTTP ports.
    let system = TestSystem::start().await;
    let h = system.http;
    let prometheus = Prometheus::start(&[h.user, h.order, h.inventory, h.notification]).await;
    let up = prometheus
        .until("sum(up{job=\"shop\"})", |v| v == 4.0)
        .await;
    assert_eq!(up.len(), 1);
    let customer = system.customer().await;
    system.stock_up("apple", 100).await;
    // The counter exists (the customer probe's order) and Prometheus has it before the
    // orders below, so increase() sees them all.
    let created = "messaging_client_sent_messages_total{routing_key=\"order.created\"}";
    prometheus.until(created, |v| v >= 1.0).await;
    let missing = system
        .clients
        .order
        .clone()
        .get_order(GetOrderRequest {
            order_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("no such order");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Act: a few sagas.
    const ORDERS: usize = 5;
    let mut orders = Vec::new();
    for _ in 0..ORDERS {
        orders.push(system.order(&customer, &[("apple", 1)]).await);
    }
    for order in &orders {
        assert_eq!(
            system.settled(&order.order_id).await.status,
            OrderStatus::Confirmed as i32
        );
    }

    // Assert: the increase is at least the orders placed; each step of the saga shows.
    let increase = format!("sum(increase({created}[1m]))");
    prometheus.until(&increase, |v| v >= ORDERS as f64).await;
    prometheus
        .until(
            "sum(messaging_client_sent_messages_total{service=\"inventory\",routing_key=\"inventory.reserved\"})",
            |v| v >= ORDERS as f64,
        )
        .await;
    prometheus
        .until(
            "sum(messaging_process_duration_seconds_count{service=\"notification\",routing_key=\"order.confirmed\",outcome=\"applied\"})",
            |v| v >= ORDERS as f64,
        )
        .await;
    prometheus
        .until(
            "sum(rpc_server_call_duration_seconds_count{service=\"order\",rpc_method=\"GetOrder\",rpc_grpc_status_code=\"5\"})",
            |v| v == 1.0,
        )
        .await;
    // Once drained, nothing waits in any outbox.
    prometheus
        .until("max(shop_outbox_pending_messages)", |v| v == 0.0)
        .await;

    // The alerting rules are loaded and healthy, and none fires on a healthy system.
    let rules = prometheus.get("/api/v1/rules").await;
    let loaded: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(loaded.len(), 11, "{rules}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_ne!(rule["state"], "firing", "{rule}");
    }

    // Every dashboard query answers with data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/dashboards/shop.json"))
            .expect("read the dashboard"),
    )
    .expect("the dashboard is JSON");
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("an expr").to_owned())
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    for query in queries {
        // Grafana fills $__rate_interval from the scrape interval; 1m covers this test.
        let promql = query.replace("$__rate_interval", "1m");
        eventually(PROMETHEUS_WAIT, &format!("data for {promql}"), || async {
            match prometheus.query(&promql).await {
                Ok(result) => (!result.is_empty()).then_some(()),
                Err(e) => panic!("the dashboard query {promql} fails: {e}"),
            }
        })
        .await;
    }
    system.stop().await;
}
