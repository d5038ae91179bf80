//! A measurement, not a timed test: the user service's peak resident memory (VmHWM) under 256
//! concurrent Logins for unknown emails, at the default argon2id cost (19 MiB per check), with
//! the password checks bounded as configured and, for comparison, with the bound lifted
//! (`PASSWORD_HASH_CONCURRENCY=256`, `PASSWORD_HASH_QUEUE=0`: every call hashes at once, as
//! before the bound existed). It prints one line per run and checks only that the bounded run
//! stays far below the unbounded one. Ignored by the plain test command (the unbounded run
//! needs about 5 GiB); run it with
//! `cargo build --release --bin shop && SHOP_BINARY=target/release/shop cargo test -p shop-tests --test login_flood -- --ignored --nocapture`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shop_proto::user::v1::LoginRequest;
use shop_proto::user::v1::user_service_client::UserServiceClient;
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
}

async fn flood(limits: &[(&str, &str)]) -> Flood {
    let database = TestDatabase::create().await;
    let broker = TestBroker::new();
    let (port, http_port) = (free_port(), free_port());
    let mut command = Command::new(shop_binary());
    command
        .args(["serve", "user"])
        .env("USER_DATABASE_URL", &database.url)
        .env("USER_GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("USER_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.names.prefix)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in limits {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start the user service");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let channel = loop {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            break channel;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the user service never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let start_mib = status_kib(child.id(), "VmRSS:") / 1024;
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
    let peak_mib = status_kib(child.id(), "VmHWM:") / 1024;
    let _ = child.kill();
    let _ = child.wait();
    let mut flood = Flood {
        peak_mib,
        start_mib,
        refused: 0,
        checked: 0,
        seconds,
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
             RSS {} MiB before, peak {} MiB",
            f.seconds, f.checked, f.refused, f.start_mib, f.peak_mib
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
