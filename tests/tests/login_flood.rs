//! A measurement, not a timed test: the user service's peak resident memory (VmHWM) under 256
//! concurrent Logins for unknown emails, at the default argon2id cost (19 MiB per check), with
//! the password checks bounded as configured and, for comparison, with the bound lifted
//! (`PASSWORD_HASH_CONCURRENCY=256`, `PASSWORD_HASH_QUEUE=0`: every call hashes at once, as
//! before the bound existed). It prints one line per run and checks only that the bounded run
//! stays far below the unbounded one. Ignored by the plain test command (the unbounded run
//! needs about 5 GiB). Meanwhile a second service on the same machine (the inventory, in a
//! process of its own as in a deployment) answers GetStock calls one after another, and their
//! latency during the flood is printed beside the same calls' latency before it: the bound
//! keeps memory in check, not CPU, so this shows what a flood costs the neighbours. Run it with
//! `cargo build --release --bin shop && SHOP_BINARY=target/release/shop cargo test -p shop-tests --test login_flood -- --ignored --nocapture`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shop_proto::inventory::v1::GetStockRequest;
use shop_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::user::v1::user_service_client::UserServiceClient;
use shop_proto::user::v1::{CreateUserRequest, LoginRequest};
use shop_shared::testing::{TestBroker, TestDatabase, free_port};

const CALLERS: usize = 256;

/// The `shop` binary: `SHOP_BINARY`, or the one next to this test binary.
fn shop_binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SHOP_BINARY") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("shop")
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field")
}

struct Flood {
    peak_mib: u64,
    start_mib: u64,
    refused: usize,
    checked: usize,
    seconds: f64,
    /// GetStock latencies on the inventory before the flood, then during it.
    before: Latency,
    during: Latency,
}

/// p50 and p99 of a series of calls, in milliseconds.
#[derive(Debug, Default)]
struct Latency {
    calls: usize,
    p50_ms: f64,
    p99_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Self {
            calls: samples.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        }
    }
}

/// Starts `shop serve <service>` with `env`; returns the process and a channel to its port.
#[allow(
    clippy::zombie_processes,
    reason = "the child is returned; the caller kills and waits for it"
)]
async fn serve(
    service: &str,
    env: &[(String, String)],
    port: u16,
) -> (std::process::Child, tonic::transport::Channel) {
    let mut command = Command::new(shop_binary());
    command
        .args(["serve", service])
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start the service");
    let started = Instant::now();
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            return (child, channel);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{service} never listened");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GetStock calls one after another until `stop`; their latencies.
async fn get_stock_until(
    mut inventory: InventoryServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
    >,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    while !stop.is_cancelled() {
        let began = Instant::now();
        let answer = inventory
            .get_stock(GetStockRequest {
                product_id: "no-such-product".into(),
            })
            .await;
        assert_eq!(
            answer.map(|_| ()).map_err(|s| s.code()),
            Err(tonic::Code::NotFound),
            "GetStock answers"
        );
        samples.push(began.elapsed());
    }
    samples
}

/// Puts `Authorization: Bearer <token>` on every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

async fn flood(limits: &[(&str, &str)]) -> Flood {
    let (user_db, inventory_db) = (TestDatabase::create().await, TestDatabase::create().await);
    let broker = TestBroker::new();
    let (port, http_port) = (free_port(), free_port());
    let common = |service: &str, db: &TestDatabase, port: u16, http: u16| {
        let upper = service.to_uppercase();
        vec![
            (format!("{upper}_DATABASE_URL"), db.url.clone()),
            (format!("{upper}_GRPC_ADDR"), format!("127.0.0.1:{port}")),
            (format!("{upper}_HTTP_ADDR"), format!("127.0.0.1:{http}")),
            ("AMQP_URL".into(), broker.url.clone()),
            ("AMQP_PREFIX".into(), broker.names.prefix.clone()),
        ]
    };
    let mut user_env = common("user", &user_db, port, http_port);
    user_env.extend(limits.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (mut child, channel) = serve("user", &user_env, port).await;
    let (inventory_port, inventory_http) = (free_port(), free_port());
    let mut inventory_env = common("inventory", &inventory_db, inventory_port, inventory_http);
    inventory_env.push((
        "AUTH_JWKS_URL".into(),
        format!("http://127.0.0.1:{http_port}/.well-known/jwks.json"),
    ));
    let (mut inventory_child, inventory_channel) =
        serve("inventory", &inventory_env, inventory_port).await;

    // A customer's token for the inventory's calls.
    let mut users = UserServiceClient::new(channel.clone());
    let password = "a password long enough";
    users
        .create_user(CreateUserRequest {
            email: "neighbour@example.com".into(),
            name: "Neighbour".into(),
            password: password.into(),
            ..CreateUserRequest::default()
        })
        .await
        .expect("CreateUser");
    let token = users
        .login(LoginRequest {
            email: "neighbour@example.com".into(),
            password: password.into(),
        })
        .await
        .expect("Login")
        .into_inner()
        .access_token;
    let bearer = Bearer(format!("Bearer {token}").parse().expect("a header value"));
    let inventory = InventoryServiceClient::with_interceptor(inventory_channel, bearer);
    let quiet = tokio_util::sync::CancellationToken::new();
    let sampling = tokio::spawn(get_stock_until(inventory.clone(), quiet.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await; // a measurement window, not a wait for a condition
    quiet.cancel();
    let before = Latency::of(sampling.await.expect("the quiet calls"));

    let start_mib = status_kib(child.id(), "VmRSS:") / 1024;
    let flooding = tokio_util::sync::CancellationToken::new();
    let sampling = tokio::spawn(get_stock_until(inventory, flooding.clone()));
    let began = Instant::now();
    let calls = (0..CALLERS).map(|i| {
        let mut client = UserServiceClient::new(channel.clone());
        async move {
            client
                .login(LoginRequest {
                    email: format!("nobody-{i}@example.com"),
                    password: "not the password".into(),
                })
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let seconds = began.elapsed().as_secs_f64();
    flooding.cancel();
    let during = Latency::of(sampling.await.expect("the calls during the flood"));
    let peak_mib = status_kib(child.id(), "VmHWM:") / 1024;
    for process in [&mut child, &mut inventory_child] {
        let _ = process.kill();
        let _ = process.wait();
    }
    let mut flood = Flood {
        peak_mib,
        start_mib,
        refused: 0,
        checked: 0,
        seconds,
        before,
        during,
    };
    for answer in answers {
        match answer.map_err(|s| s.code()) {
            Err(tonic::Code::ResourceExhausted) => flood.refused += 1,
            Err(tonic::Code::Unauthenticated) => flood.checked += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    flood
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that needs about 5 GiB: run it alone (see the module docs)"]
async fn peak_memory_under_256_concurrent_logins_with_and_without_the_bound() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let runs = [
        (
            format!("bounded (defaults: {cpus} running, 32 waiting)"),
            vec![],
        ),
        (
            "unbounded (256 running, none waiting)".to_owned(),
            vec![
                ("PASSWORD_HASH_CONCURRENCY", "256"),
                ("PASSWORD_HASH_QUEUE", "0"),
            ],
        ),
    ];
    let mut peaks = Vec::new();
    for (name, limits) in runs {
        let f = flood(&limits).await;
        println!(
            "login flood, {name}: {CALLERS} calls in {:.1} s, {} checked, {} refused at once; \
             RSS {} MiB before, peak {} MiB; the inventory's GetStock p50/p99 {:.1}/{:.1} ms \
             ({} calls) before, {:.1}/{:.1} ms ({} calls) during",
            f.seconds,
            f.checked,
            f.refused,
            f.start_mib,
            f.peak_mib,
            f.before.p50_ms,
            f.before.p99_ms,
            f.before.calls,
            f.during.p50_ms,
            f.during.p99_ms,
            f.during.calls
        );
        peaks.push(f.peak_mib);
    }
    assert!(
        peaks[0] * 4 < peaks[1],
        "the bounded peak ({} MiB) is far below the unbounded one ({} MiB)",
        peaks[0],
        peaks[1]
    );
}
