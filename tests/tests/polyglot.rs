//! Polyglot consumers: the Python and Node.js examples (`examples/`), built from the same
//! `proto/` files, decode every event of a saga, continue its trace and export their spans.
//!
//! Ignored by default because it needs the examples prepared: run `examples/setup.sh`, then
//! `cargo test -p shop-tests --test polyglot -- --ignored` (CI does both).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shop_proto::order::v1::OrderConfirmed;
use shop_shared::messaging::{Envelope, EventContext};
use shop_shared::telemetry::{TelemetryConfig, init_with};
use shop_shared::testing::{EventProbe, Received, TestBroker, eventually, publish_envelope};
use shop_tests::otlp::{ExportedSpan, OtlpReceiver};
use shop_tests::{TestSystem, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .canonicalize()
        .expect("the examples directory")
}

fn python() -> PathBuf {
    let python = examples_dir().join("python/.venv/bin/python");
    assert!(
        python.exists() && examples_dir().join("python/gen").exists(),
        "{} is missing: run examples/setup.sh first",
        python.display()
    );
    python
}

/// One example consumer running as a child process, its stdout and stderr collected.
struct ConsumerProcess {
    name: &'static str,
    queue: String,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ConsumerProcess {
    /// Starts the `python` or `node` example consumer on its own queue under the test's
    /// prefix, bound to every key of the test's exchange; `otlp`: where to export spans.
    fn start(name: &'static str, broker: &TestBroker, otlp: Option<&str>) -> Self {
        let queue = format!("{}{name}-consumer", broker.names.prefix);
        broker.track_queue(&queue);
        broker.track_queue(format!("{queue}.dlq"));
        let (mut command, dir, script) = match name {
            "python" => (Command::new(python()), "python", "consumer.py"),
            _ => (Command::new("node"), "node", "consumer.js"),
        };
        command
            .current_dir(examples_dir().join(dir))
            .arg(script)
            .args([
                "--amqp-url",
                &broker.url,
                "--exchange",
                &broker.names.exchange(),
            ])
            .args(["--queue", &queue, "--keys", "#"])
            .env("OTEL_SERVICE_NAME", format!("{name}-consumer"))
            // Flush each span batch quickly, so export is seen soon after shutdown.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(otlp) = otlp {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} consumer: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().expect("piped stdout"), stdout.clone());
        collect_lines(child.stderr.take().expect("piped stderr"), stderr.clone());
        Self {
            name,
            queue,
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The JSON lines printed so far, one per handled event.
    fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{} printed a non-JSON line {line:?}: {e}", self.name)
                })
            })
            .collect()
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.stderr().contains("ready: queue") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the {} consumer exited with {status}:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {} consumer was not ready within {WAIT:?}:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (it flushes its spans on the way out).
    async fn stop(mut self) {
        let pid = self.child.id().expect("the consumer is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the {} consumer did not stop on SIGTERM", self.name))
            .expect("wait for the consumer");
        assert!(
            exit.success(),
            "the {} consumer exited with {exit}:\n{}",
            self.name,
            self.stderr()
        );
    }
}

fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            into.lock().unwrap().push(line);
        }
    });
}

/// What the Python client printed about the flow it drove.
struct Flow {
    trace_id: String,
    correlation_id: String,
    user_id: String,
    product_id: String,
    cancelled_order: String,
    rejected_order: String,
}

async fn run_client_tour(system: &TestSystem, otlp: &str) -> Flow {
    let a = system.addresses();
    let output = Command::new(python())
        .current_dir(examples_dir().join("python"))
        .arg("place_order.py")
        .args(["--user-addr", &a.user.to_string()])
        .args(["--order-addr", &a.order.to_string()])
        .args(["--inventory-addr", &a.inventory.to_string()])
        .args(["--stock", "5", "--quantity", "2", "--tour"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_SERVICE_NAME", "python-client")
        // AdjustStock is staff-only: the client logs in as the system's staff account.
        .env("SHOP_ADMIN_EMAIL", &system.staff_email)
        .env("SHOP_ADMIN_PASSWORD", shop_tests::PASSWORD)
        .output()
        .await
        .expect("run place_order.py");
    assert!(
        output.status.success(),
        "place_order.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("place_order.py prints JSON");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    let orders = out["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 2, "{out}");
    assert_eq!(orders[0]["status"], "ORDER_STATUS_CANCELLED", "{out}");
    assert_eq!(orders[1]["status"], "ORDER_STATUS_REJECTED", "{out}");
    Flow {
        trace_id: text(&out["trace_id"]),
        correlation_id: text(&out["correlation_id"]),
        user_id: text(&out["user_id"]),
        product_id: text(&out["product_id"]),
        cancelled_order: text(&orders[0]["order_id"]),
        rejected_order: text(&orders[1]["order_id"]),
    }
}

/// The events of the tour, as (type, id of the user or order it is about).
fn expected_events(flow: &Flow) -> HashSet<(String, String)> {
    let (u, c, r) = (&flow.user_id, &flow.cancelled_order, &flow.rejected_order);
    [
        ("shop.user.v1.UserCreated", u),
        ("shop.user.v1.UserUpdated", u),
        ("shop.order.v1.OrderCreated", c),
        ("shop.inventory.v1.StockReserved", c),
        ("shop.order.v1.OrderConfirmed", c),
        ("shop.order.v1.OrderCancelled", c),
        ("shop.inventory.v1.StockReleased", c),
        ("shop.order.v1.OrderCreated", r),
        ("shop.inventory.v1.StockReservationFailed", r),
        ("shop.order.v1.OrderRejected", r),
    ]
    .into_iter()
    .map(|(t, id)| (t.to_owned(), id.clone()))
    .collect()
}

/// (type, subject id) of a printed event: the user's id for user events, else the order's.
fn subject(line: &Value) -> (String, String) {
    let event = &line["event"];
    let id = event["orderId"]
        .as_str()
        .or_else(|| event["userId"].as_str())
        .unwrap_or_default();
    (
        line["type"].as_str().unwrap_or_default().to_owned(),
        id.to_owned(),
    )
}

/// (message id, type) of a printed event: one shape of one event.
fn shape_of(line: &Value) -> (String, String) {
    (
        line["message_id"].as_str().unwrap_or_default().to_owned(),
        line["type"].as_str().unwrap_or_default().to_owned(),
    )
}

fn trace_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).expect("a W3C traceparent")
}

fn span_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).expect("a W3C traceparent")
}

/// Checks every line a consumer printed against the message the probe read off the broker.
fn assert_decoded_like_the_broker_sent(
    consumer: &str,
    lines: &[Value],
    flow: &Flow,
    sent: &HashMap<(String, String), Received>,
) {
    for line in lines {
        let message_id = line["message_id"].as_str().expect("a message_id");
        let received = sent.get(&shape_of(line)).unwrap_or_else(|| {
            panic!("{consumer} printed a message the broker never carried: {line}")
        });
        let meta = received.meta();
        assert_eq!(
            line["type"],
            meta.message_type.as_str(),
            "{consumer}: {line}"
        );
        assert_eq!(
            line["routing_key"],
            received.routing_key.as_str(),
            "{consumer}: {line}"
        );
        assert_eq!(
            line["correlation_id"],
            flow.correlation_id.as_str(),
            "{consumer}: {line}"
        );
        if consumer == "python" {
            // It prints the CloudEvents attributes it read off the headers.
            let ce = &line["cloud_events"];
            assert_eq!(ce["specversion"], "1.0", "{line}");
            assert_eq!(ce["id"], message_id, "{line}");
            assert_eq!(ce["type"], meta.message_type.as_str(), "{line}");
            let app_id = received.properties.app_id().as_ref().map(|a| a.to_string());
            assert_eq!(
                ce["source"],
                format!("/shop/{}", app_id.unwrap_or_default()),
                "{line}"
            );
            assert_eq!(ce["subject"], subject(line).1.as_str(), "{line}");
            assert!(
                ce["time"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
        }
        let traceparent = meta.traceparent.expect("every event carries a traceparent");
        assert_eq!(
            line["trace_id"],
            trace_id_of(&traceparent),
            "{consumer}: {line}"
        );
        assert_eq!(
            line["trace_id"],
            flow.trace_id.as_str(),
            "{consumer}: one trace for the flow"
        );
    }
    // Payload fields beyond the ids, decoded from the binary protobuf.
    let find = |type_name: &str| {
        lines
            .iter()
            .find(|l| l["type"] == type_name)
            .map(|l| &l["event"])
            .unwrap_or_else(|| panic!("{consumer} decoded no {type_name}"))
    };
    let user = find("shop.user.v1.UserCreated");
    assert_eq!(user["name"], "Ada Lovelace", "{consumer}: {user}");
    assert!(
        user["createTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{consumer}: {user}"
    );
    assert_eq!(
        find("shop.user.v1.UserUpdated")["name"],
        "Ada King",
        "{consumer}"
    );
    let created = lines
        .iter()
        .find(|l| {
            subject(l)
                == (
                    "shop.order.v1.OrderCreated".into(),
                    flow.cancelled_order.clone(),
                )
        })
        .map(|l| &l["event"])
        .expect("OrderCreated of the first order");
    assert_eq!(
        created["customerId"],
        flow.user_id.as_str(),
        "{consumer}: {created}"
    );
    assert_eq!(
        created["totalCents"], "3998",
        "{consumer}: int64 as a JSON string: {created}"
    );
    assert_eq!(
        created["items"][0]["productId"],
        flow.product_id.as_str(),
        "{consumer}: {created}"
    );
    assert_eq!(created["items"][0]["quantity"], 2, "{consumer}: {created}");
    let failed = find("shop.inventory.v1.StockReservationFailed");
    assert_eq!(
        failed["shortages"][0]["productId"],
        flow.product_id.as_str(),
        "{consumer}: {failed}"
    );
}

/// Each consumer's handling span reached the OTLP endpoint as a child of the producer's span.
fn assert_spans_continue_the_trace(
    spans: &[ExportedSpan],
    service: &str,
    lines: &[Value],
    sent: &HashMap<(String, String), Received>,
) {
    for line in lines {
        let message_id = line["message_id"].as_str().unwrap_or_default();
        let traceparent = sent[&shape_of(line)]
            .meta()
            .traceparent
            .expect("a traceparent");
        // One span per shape: the message id and the span's name (its routing key) together.
        let name = format!(
            "{} process",
            line["routing_key"].as_str().unwrap_or_default()
        );
        let span = spans
            .iter()
            .find(|s| {
                s.service == service
                    && s.name == name
                    && s.attributes.get("messaging.message.id").map(String::as_str)
                        == Some(message_id)
            })
            .unwrap_or_else(|| panic!("{service} exported no span {name:?} for {message_id}"));
        assert_eq!(span.trace_id, trace_id_of(&traceparent), "{span:?}");
        assert_eq!(span.parent_span_id, span_id_of(&traceparent), "{span:?}");
    }
}

/// Runs `verify_token.py` against the system's JWK Set; its exit status and JSON line.
async fn verify_with_pyjwt(system: &TestSystem, token: &str) -> (bool, Value) {
    let output = Command::new(python())
        .current_dir(examples_dir().join("python"))
        .arg("verify_token.py")
        .args(["--jwks-url", &system.jwks_url])
        .arg(token)
        .output()
        .await
        .expect("run verify_token.py");
    let line: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify_token.py prints JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), line)
}

#[tokio::test]
#[ignore = "needs examples/setup.sh; CI runs it with --ignored"]
async fn a_python_consumer_of_the_released_contract_reads_a_v1_user_created_carrying_metadata() {
    use prost::Message as _;
    // Arrange: today's v1 UserCreated, with the field added since the release.
    let event = shop_proto::user::v1::UserCreated {
        user_id: "01900000-0000-7000-8000-000000000001".into(),
        email: "ada@example.com".into(),
        name: "Ada Lovelace".into(),
        metadata: [("signup_source".to_owned(), "newsletter".to_owned())]
            .into_iter()
            .collect(),
        ..Default::default()
    };

    // Act: decoded with the released descriptor set, as a consumer built from it would.
    let mut child = std::process::Command::new(python())
        .current_dir(examples_dir().join("python"))
        .args(["released.py", "--type", "shop.user.v1.UserCreated"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run released.py");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&event.encode_to_vec())
            .expect("write the body");
    }
    let output = child.wait_with_output().expect("released.py ends");

    // Assert: every field the release knows reads as sent; the new one is skipped.
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(line["release"], "v0.1.0", "{line}");
    assert_eq!(
        line["event"],
        serde_json::json!({
            "userId": "01900000-0000-7000-8000-000000000001",
            "email": "ada@example.com",
            "name": "Ada Lovelace"
        })
    );
}

#[tokio::test]
#[ignore = "needs examples/setup.sh; CI runs it with --ignored"]
async fn a_python_service_verifies_shop_tokens_from_the_jwks_with_pyjwt() {
    // Arrange
    let system = TestSystem::start().await;
    let customer = system.logged_in_customer().await;

    // Act
    let (valid, claims) = verify_with_pyjwt(&system, &customer.token).await;
    let mut tampered: Vec<String> = customer.token.split('.').map(str::to_owned).collect();
    tampered[1] = tampered[1].chars().rev().collect();
    let (forged_ok, forged) = verify_with_pyjwt(&system, &tampered.join(".")).await;

    // Assert
    assert!(valid, "{claims}");
    assert_eq!(claims["sub"], customer.user_id.as_str(), "{claims}");
    assert_eq!(claims["roles"], serde_json::json!(["customer"]), "{claims}");
    assert!(!forged_ok, "a tampered token is refused: {forged}");
    assert_eq!(forged["valid"], false);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs examples/setup.sh; CI runs it with --ignored"]
async fn python_and_node_consumers_decode_every_event_of_a_saga_and_continue_its_trace() {
    // Arrange: the system, an OTLP receiver, a probe of everything on the exchange, and both
    // example consumers bound to every key on this test's exchange.
    let (receiver, otlp_addr) = OtlpReceiver::start().await;
    let otlp = format!("http://{otlp_addr}");
    let telemetry = init_with(
        "shop-services",
        &TelemetryConfig {
            otlp_endpoint: Some(otlp.clone()),
            json: false,
            default_filter: "info".into(),
        },
    )
    .expect("install telemetry with OTLP export");
    let system = TestSystem::start().await;
    let mut probe = EventProbe::bind(&system.broker, &["#"]).await;
    let mut python = ConsumerProcess::start("python", &system.broker, Some(&otlp));
    let mut node = ConsumerProcess::start("node", &system.broker, Some(&otlp));
    python.wait_ready().await;
    node.wait_ready().await;

    // Act: the Python gRPC client's tour: a user, stock, a confirmed-then-cancelled order,
    // a rejected order and a profile update, all in one trace and one correlation id.
    let flow = run_client_tour(&system, &otlp).await;

    // Assert: both decoded every event of the flow, with the ids the broker carried.
    let expected = expected_events(&flow);
    for consumer in [&python, &node] {
        eventually(
            WAIT,
            &format!("the {} consumer to decode every event", consumer.name),
            || {
                let seen: HashSet<_> = consumer.events().iter().map(subject).collect();
                let complete = expected.is_subset(&seen);
                async move { complete.then_some(()) }
            },
        )
        .await;
    }
    let (python_lines, node_lines) = (python.events(), node.events());
    // The same messages as the broker carried them, read by the probe.
    // Keyed by (message id, type): the two shapes of a sign-up share one message id.
    let mut sent = HashMap::new();
    for line in python_lines.iter().chain(&node_lines) {
        let key = shape_of(line);
        while !sent.contains_key(&key) {
            let received = probe
                .expect(WAIT, &format!("message {key:?} on the probe"))
                .await;
            let meta = received.meta();
            sent.insert((meta.message_id, meta.message_type), received);
        }
    }
    assert_decoded_like_the_broker_sent("python", &python_lines, &flow, &sent);
    assert_decoded_like_the_broker_sent("node", &node_lines, &flow, &sent);

    // Stopping flushes their spans: each handling span is a child of the producer's span.
    python.stop().await;
    node.stop().await;
    for (service, lines) in [
        ("python-consumer", &python_lines),
        ("node-consumer", &node_lines),
    ] {
        let spans = eventually(
            WAIT,
            &format!("{service}'s spans at the OTLP endpoint"),
            || {
                let spans = receiver.spans();
                let count = spans.iter().filter(|s| s.service == service).count();
                async move { (count >= lines.len()).then_some(spans) }
            },
        )
        .await;
        assert_spans_continue_the_trace(&spans, service, lines, &sent);
    }
    system.stop().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush the services' spans");
    // One unbroken trace: the client's root, the services' spans, the consumers' spans.
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| s.service == "python-client"
            && s.name == "place order"
            && s.trace_id == flow.trace_id
            && s.parent_span_id.is_empty()),
        "the Python client exported the root span of the flow"
    );
    for consumer in spans.iter().filter(|s| s.service.ends_with("-consumer")) {
        let parent = spans
            .iter()
            .find(|s| s.span_id == consumer.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {consumer:?} was exported"));
        // Exported under the publishing service's own name, although all four run here.
        assert!(
            shop_shared::telemetry::per_service::SERVICES.contains(&parent.service.as_str()),
            "{parent:?}"
        );
        assert!(parent.name.ends_with(" publish"), "{parent:?}");
        assert_eq!(parent.trace_id, flow.trace_id, "{parent:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs examples/setup.sh; CI runs it with --ignored"]
async fn the_consumers_dead_letter_an_undecodable_body_and_skip_an_unknown_type() {
    // Arrange
    let broker = TestBroker::new();
    let mut consumers = [
        ConsumerProcess::start("python", &broker, None),
        ConsumerProcess::start("node", &broker, None),
    ];
    for consumer in &mut consumers {
        consumer.wait_ready().await;
    }
    let context = EventContext::new_flow();
    let event = OrderConfirmed {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        total_cents: 100,
        ..Default::default()
    };
    // A body that is no OrderConfirmed (a truncated varint), on a key no service consumes.
    let mut poison = Envelope::new(&event, "test", &context);
    poison.payload = vec![0xff, 0xff, 0xff];
    poison.routing_key = "test.poison".into();
    // A type from the future that this build of the examples does not know.
    let mut unknown = Envelope::new(&event, "test", &context);
    unknown.message_type = "shop.future.v1.SomethingNew".into();
    unknown.routing_key = "test.unknown".into();
    // A good event after both: handled, so the two before it were not stuck.
    let good = Envelope::new(&event, "test", &context);

    // Act
    for envelope in [&poison, &unknown, &good] {
        publish_envelope(&broker, envelope).await;
    }

    // Assert
    for consumer in &consumers {
        eventually(
            WAIT,
            &format!("{} to handle the good event", consumer.name),
            || {
                let done = consumer
                    .events()
                    .iter()
                    .any(|l| l["message_id"] == good.message_id.to_string());
                async move { done.then_some(()) }
            },
        )
        .await;
        let printed: Vec<_> = consumer
            .events()
            .iter()
            .map(|l| l["message_id"].clone())
            .collect();
        assert_eq!(
            printed.len(),
            1,
            "{}: only the good event is printed: {printed:?}",
            consumer.name
        );
        assert!(
            consumer
                .stderr()
                .contains(&format!("skipping message {}", unknown.message_id)),
            "{}: says it skipped the unknown type:\n{}",
            consumer.name,
            consumer.stderr()
        );
        let mut dlq = EventProbe::queue(&broker, &format!("{}.dlq", consumer.queue)).await;
        let parked = dlq
            .expect(WAIT, "the poison message in the consumer's DLQ")
            .await;
        assert_eq!(
            parked.meta().message_id,
            poison.message_id.to_string(),
            "{}",
            consumer.name
        );
        assert_eq!(parked.body, poison.payload, "{}", consumer.name);
    }
    for consumer in consumers {
        consumer.stop().await;
    }
}
