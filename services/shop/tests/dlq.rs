//! `shop dlq` against the real broker, on a per-test prefix: dead letters placed in
//! `inventory.dlq` as the consumer places them, then shown, listed, replayed and purged. What
//! a command does not pick stays, in its order; nothing is ever lost, even when a replay stops
//! between the broker's confirm of a copy and the removal of the original.

use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser as _;
use lapin::types::AMQPValue;
use serde_json::Value;
use shop::cmd::dlq::dead_letter::DeadLetter;
use shop::cmd::dlq::held::Held;
use shop::cmd::dlq::replay::{self, Observer, Outcome};
use shop::cmd::dlq::{DlqArgs, run};
use shop_proto::order::v1::{LineItem, OrderCreated};
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::{Envelope, EventContext, RetryPolicy, envelope, topology};
use shop_shared::testing::{EventProbe, TestBroker, place_dead_letter, publish};

const WAIT: Duration = Duration::from_secs(10);

/// A broker prefix with the inventory's queues declared, as the inventory service declares
/// them.
async fn inventory_topology() -> TestBroker {
    let broker = TestBroker::new();
    let retry = RetryPolicy::default();
    broker.track_service("inventory", &retry);
    let conn = broker.connect("topology").await;
    let channel = conn.create_channel().await.expect("channel");
    topology::declare_consumer(
        &channel,
        &broker.names,
        "inventory",
        &["order.created"],
        &retry,
        None,
    )
    .await
    .expect("declare the inventory's queues");
    let _ = conn.close(200, "declared").await;
    broker
}

fn config(broker: &TestBroker) -> AmqpConfig {
    AmqpConfig {
        url: broker.url.clone(),
        prefix: broker.names.prefix.clone(),
    }
}

fn order_created(order_id: &str) -> Envelope {
    let event = OrderCreated {
        order_id: order_id.into(),
        customer_id: "c-1".into(),
        items: vec![LineItem {
            product_id: "p-1".into(),
            quantity: 2,
            unit_price_cents: 150,
        }],
        total_cents: 300,
        ..OrderCreated::default()
    };
    Envelope::new(&event, "order", &EventContext::new_flow())
}

/// Places `count` OrderCreated dead letters; returns their envelopes in queue order.
async fn place(broker: &TestBroker, count: usize, reason: &str) -> Vec<Envelope> {
    let mut placed = Vec::new();
    for _ in 0..count {
        let envelope = order_created(&uuid::Uuid::now_v7().to_string());
        place_dead_letter(broker, "inventory", &envelope, reason, &[]).await;
        placed.push(envelope);
    }
    placed
}

/// Runs `shop dlq ARGS…` in-process; returns what it printed.
async fn dlq(broker: &TestBroker, args: &[&str]) -> anyhow::Result<String> {
    let args = DlqArgs::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    run(args, &config(broker), &mut out).await?;
    Ok(String::from_utf8(out)?)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The message ids in the DLQ, in order, as `shop dlq show --json` reports them.
async fn dlq_ids(broker: &TestBroker) -> Vec<String> {
    json_lines(
        &dlq(broker, &["show", "inventory", "--json"])
            .await
            .expect("show"),
    )
    .iter()
    .map(|m| m["message_id"].as_str().unwrap_or_default().to_owned())
    .collect()
}

/// The JSON lines of `shop dlq <args>` once there are `count` of them: like [`expect_dlq`], a
/// reading right after a command may not see what that command gave back yet.
async fn shown_lines(broker: &TestBroker, args: &[&str], count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lines = json_lines(&dlq(broker, args).await.expect("show"));
        if lines.len() == count || tokio::time::Instant::now() >= deadline {
            assert_eq!(lines.len(), count, "{args:?} within {WAIT:?}");
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the DLQ holds exactly `expected`, in order. Messages a command gave back reach
/// the queue a moment after its channel closed (the quorum queue applies the returns), so a
/// reading right after a command may not see them yet: a wait with a deadline, never a sleep.
async fn expect_dlq(broker: &TestBroker, expected: Vec<String>) {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        last = dlq_ids(broker).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, expected, "the DLQ within {WAIT:?}");
}

fn ids(envelopes: &[&Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.message_id.to_string()).collect()
}

#[tokio::test]
async fn show_decodes_each_message_and_leaves_the_queue_as_it_was() {
    let broker = inventory_topology().await;
    let placed = place(
        &broker,
        2,
        "handler failed: stock row locked (after 5 attempts)",
    )
    .await;
    let garbage = Envelope {
        payload: vec![0xff, 0xff, 0xff],
        ..order_created("garbage")
    };
    place_dead_letter(
        &broker,
        "inventory",
        &garbage,
        "not a valid OrderCreated",
        &[],
    )
    .await;

    let shown = json_lines(
        &dlq(&broker, &["show", "inventory", "--json"])
            .await
            .unwrap(),
    );
    assert_eq!(shown.len(), 3, "{shown:?}");
    for (message, envelope) in shown.iter().zip(&placed) {
        assert_eq!(message["message_id"], envelope.message_id.to_string());
        assert_eq!(message["type"], "shop.order.v1.OrderCreated");
        assert_eq!(message["routing_key"], "order.created");
        assert_eq!(message["correlation_id"], envelope.correlation_id.as_str());
        assert_eq!(
            message["reason"],
            "handler failed: stock row locked (after 5 attempts)"
        );
        assert_eq!(message["retry_count"], 5);
        assert!(message["died_at"].as_str().is_some(), "{message}");
        assert!(message["headers"][envelope::DEATH_REASON].is_string());
        // The body, decoded into proto3 JSON: camelCase, int64 as a string.
        let body = &message["body"];
        assert_eq!(body["orderId"], order_id(envelope).as_str());
        assert_eq!(body["items"][0]["productId"], "p-1");
        assert_eq!(body["totalCents"], "300");
    }
    assert_eq!(shown[2]["body"], Value::Null);
    assert_eq!(shown[2]["body_hex"], "ffffff");
    assert!(
        shown[2]["body_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid")
    );

    // Reading took nothing away and changed no order; --limit shows the first ones.
    let mut expected = ids(&placed.iter().collect::<Vec<_>>());
    expected.push(garbage.message_id.to_string());
    expect_dlq(&broker, expected.clone()).await;
    let limited = shown_lines(&broker, &["show", "inventory", "--limit", "1", "--json"], 1).await;
    assert_eq!(limited[0]["message_id"], expected[0].as_str());
    // --limit changed no order either.
    expect_dlq(&broker, expected.clone()).await;

    // The text form names the same messages.
    // (Read until all are back, as above.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let text = dlq(&broker, &["show", "inventory.dlq"]).await.unwrap();
        if expected.iter().all(|id| text.contains(id.as_str()))
            || tokio::time::Instant::now() >= deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in &expected {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(text.contains("\"orderId\""), "{text}");
}

fn order_id(envelope: &Envelope) -> String {
    use prost::Message as _;
    OrderCreated::decode(envelope.payload.as_slice())
        .expect("an OrderCreated")
        .order_id
}

#[tokio::test]
async fn list_groups_messages_by_type_and_masked_reason() {
    let broker = inventory_topology().await;
    let mut first = Vec::new();
    for _ in 0..2 {
        let envelope = order_created(&uuid::Uuid::now_v7().to_string());
        let reason = format!(
            "handler failed: order {} is locked (after 5 attempts)",
            order_id(&envelope)
        );
        place_dead_letter(&broker, "inventory", &envelope, &reason, &[]).await;
        first.push(envelope);
    }
    let other = place(
        &broker,
        1,
        "the body is not a valid shop.order.v1.OrderCreated",
    )
    .await;

    let listed = json_lines(&dlq(&broker, &["list", "--json"]).await.unwrap());
    let inventory = listed
        .iter()
        .find(|q| q["queue"] == broker.names.dlq("inventory").as_str())
        .unwrap_or_else(|| panic!("inventory.dlq listed: {listed:?}"));
    assert_eq!(inventory["depth"], 3);
    let groups = inventory["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0]["group"], 1);
    assert_eq!(groups[0]["count"], 2);
    assert_eq!(groups[0]["type"], "shop.order.v1.OrderCreated");
    assert_eq!(
        groups[0]["reason"],
        "handler failed: order <id> is locked (after <n> attempts)"
    );
    assert!(groups[0]["oldest"].as_str() <= groups[0]["newest"].as_str());
    assert_eq!(groups[1]["count"], 1);
    assert_eq!(groups[1]["message_ids"][0], other[0].message_id.to_string());

    // Group 1 alone is replayed; group 2 stays.
    let out = dlq(&broker, &["replay", "inventory", "--group", "1"])
        .await
        .unwrap();
    assert!(out.contains("replayed 2 messages"), "{out}");
    expect_dlq(&broker, ids(&[&other[0]])).await;
    let text = dlq(&broker, &["list"]).await.unwrap();
    assert!(
        text.contains(&format!("{}: 1 message", broker.names.dlq("inventory"))),
        "{text}"
    );
    assert_eq!(groups[0]["message_ids"][1], first[1].message_id.to_string());
}

#[tokio::test]
async fn replay_sends_the_copy_to_its_queue_only_and_leaves_the_others_in_order() {
    let broker = inventory_topology().await;
    let placed = place(&broker, 3, "handler failed (after 5 attempts)").await;
    let (a, b, c) = (&placed[0], &placed[1], &placed[2]);
    // Every subscriber of the exchange: it must not see the replayed copy.
    let mut subscriber = EventProbe::bind(&broker, &["#"]).await;

    let out = dlq(
        &broker,
        &[
            "replay",
            "inventory",
            "--message-id",
            &b.message_id.to_string(),
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("replayed 1 message to"), "{out}");
    assert!(out.contains("left in"), "{out}");

    let mut inventory = EventProbe::queue(&broker, &broker.names.queue("inventory")).await;
    let copy = inventory.expect(WAIT, "the replayed copy").await;
    assert_eq!(copy.meta().message_id, b.message_id, "same message_id");
    assert_eq!(copy.body, b.payload, "same body");
    assert_eq!(copy.meta().routing_key, "order.created");
    assert_eq!(copy.meta().retry_count, 0, "a fresh retry budget");
    let headers = copy.properties.headers().clone().unwrap_or_default();
    assert_eq!(
        envelope::header_u32(&headers, envelope::REPLAYED_COUNT),
        Some(1)
    );
    assert!(copy.header(envelope::REPLAYED_AT).is_some());
    assert_eq!(copy.header(envelope::DEATH_REASON), None);
    assert_eq!(
        copy.properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some(b.correlation_id.as_str())
    );
    assert!(
        inventory.next(Duration::from_millis(300)).await.is_none(),
        "one copy only"
    );

    // A sentinel published after the replay reaches the subscriber first: the copy never
    // went through the exchange.
    let sentinel = publish(&broker, &OrderCreated::default()).await;
    let seen = subscriber.expect(WAIT, "the sentinel").await;
    assert_eq!(seen.meta().message_id, sentinel);

    // The others stay, in order.
    expect_dlq(&broker, ids(&[a, c])).await;
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let broker = inventory_topology().await;
    let placed = place(&broker, 2, "handler failed").await;
    let out = json_lines(
        &dlq(
            &broker,
            &["replay", "inventory", "--all", "--dry-run", "--json"],
        )
        .await
        .unwrap(),
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0]["outcome"], "would_replay");
    assert_eq!(out[0]["message_id"], placed[0].message_id.to_string());
    assert_eq!(out[2]["would_replay"], 2);
    assert_eq!(out[2]["left"], 2);
    expect_dlq(&broker, ids(&placed.iter().collect::<Vec<_>>())).await;
    let mut inventory = EventProbe::queue(&broker, &broker.names.queue("inventory")).await;
    assert!(inventory.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn purge_removes_only_what_it_was_told() {
    let broker = inventory_topology().await;
    let placed = place(&broker, 3, "handler failed").await;
    let (a, b, c) = (&placed[0], &placed[1], &placed[2]);
    let ids_arg = format!("{},{}", a.message_id, c.message_id);
    let out = dlq(
        &broker,
        &["purge", "inventory", "--message-id", &ids_arg, "--yes"],
    )
    .await
    .unwrap();
    assert!(out.contains("deleted 2 messages"), "{out}");
    assert!(
        out.contains(&a.message_id.to_string()) && out.contains(&c.message_id.to_string()),
        "{out}"
    );
    assert!(out.contains("shop.order.v1.OrderCreated"), "{out}");
    expect_dlq(&broker, ids(&[b])).await;

    // An id that is not there: nothing is deleted.
    let missing = dlq(
        &broker,
        &["purge", "inventory", "--message-id", "nope", "--yes"],
    )
    .await;
    assert!(missing.unwrap_err().to_string().contains("nope"));
    expect_dlq(&broker, ids(&[b])).await;

    dlq(&broker, &["purge", "inventory", "--all", "--yes"])
        .await
        .unwrap();
    assert!(dlq_ids(&broker).await.is_empty());
}

#[tokio::test]
async fn a_message_replayed_too_often_stays_in_the_dlq() {
    let broker = inventory_topology().await;
    let tired = order_created("tired");
    place_dead_letter(
        &broker,
        "inventory",
        &tired,
        "handler failed",
        &[(envelope::REPLAYED_COUNT, AMQPValue::LongInt(3))],
    )
    .await;
    let fresh = place(&broker, 1, "handler failed").await;

    let out = dlq(&broker, &["replay", "inventory", "--all", "--json"])
        .await
        .unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines[0]["outcome"], "skipped_over_limit", "{out}");
    assert_eq!(lines[1]["outcome"], "replayed", "{out}");
    assert_eq!(lines[2]["replayed"], 1);
    assert_eq!(lines[2]["skipped"], 1);
    expect_dlq(&broker, ids(&[&tired])).await;

    // A higher limit lets it go, counted once more.
    dlq(
        &broker,
        &["replay", "inventory", "--all", "--max-replays", "4"],
    )
    .await
    .unwrap();
    assert!(dlq_ids(&broker).await.is_empty());
    let mut inventory = EventProbe::queue(&broker, &broker.names.queue("inventory")).await;
    let first = inventory.expect(WAIT, "the fresh copy").await;
    assert_eq!(first.meta().message_id, fresh[0].message_id);
    let second = inventory.expect(WAIT, "the tired copy").await;
    let headers = second.properties.headers().clone().unwrap_or_default();
    assert_eq!(
        envelope::header_u32(&headers, envelope::REPLAYED_COUNT),
        Some(4)
    );
}

/// Stops a replay right after the broker confirmed the first copy, as a kill would.
struct StopAfterFirstConfirm;

impl Observer for StopAfterFirstConfirm {
    fn confirmed(&mut self, _letter: &DeadLetter) -> ControlFlow<()> {
        ControlFlow::Break(())
    }
    fn finished(&mut self, _letter: &DeadLetter, _outcome: &Outcome) {}
}

#[tokio::test]
async fn a_replay_stopped_between_the_confirm_and_the_removal_loses_nothing() {
    let broker = inventory_topology().await;
    let placed = place(&broker, 3, "handler failed").await;
    let decoder = shop::cmd::inspect::decoded::Decoder::new().unwrap();
    let tool = shop::cmd::inspect::broker::Broker::connect(&config(&broker), "dlq-test")
        .await
        .unwrap();
    let mut held = Held::take(&tool, &broker.names.dlq("inventory"))
        .await
        .unwrap();
    let summary = replay::replay(
        &mut held,
        &decoder,
        replay::Pick::All,
        replay::Options {
            queue: &broker.names.queue("inventory"),
            max_replays: 3,
            dry_run: false,
        },
        &mut StopAfterFirstConfirm,
    )
    .await
    .unwrap();
    assert!(summary.interrupted);
    assert_eq!(summary.replayed, 0);
    // The process goes away without a word: the connection drops with everything held.
    drop(held);
    tool.close().await;

    // The first copy is in the queue and its original is still in the DLQ, with the others:
    // a duplicate at worst, which the inbox absorbs.
    let all = ids(&placed.iter().collect::<Vec<_>>());
    expect_dlq(&broker, all).await;
    let mut inventory = EventProbe::queue(&broker, &broker.names.queue("inventory")).await;
    let copy = inventory.expect(WAIT, "the confirmed copy").await;
    assert_eq!(copy.meta().message_id, placed[0].message_id);
}

/// The real binary: exit code 1 and one clear line for an unknown queue, an unreachable
/// broker and a purge that is not confirmed.
#[tokio::test]
async fn the_command_fails_clearly() {
    let broker = inventory_topology().await;
    let shop = |args: &[&str], url: &str, stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(args)
            .env("AMQP_URL", url)
            .env("AMQP_PREFIX", &broker.names.prefix)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shop");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("shop exits");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = shop(&["dlq", "show", "nosuch"], &broker.url, "");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("there is no queue {}", broker.names.dlq("nosuch"))),
        "{stderr}"
    );

    let (code, _, stderr) = shop(&["dlq", "list"], "amqp://guest:s3cret@127.0.0.1:1/%2f", "");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");

    let (code, _, stderr) = shop(
        &["events", "tail"],
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach RabbitMQ"), "{stderr}");

    let placed = place(&broker, 1, "handler failed").await;
    let (code, _, stderr) = shop(&["dlq", "purge", "inventory", "--all"], &broker.url, "n\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("delete them? [y/N]"), "{stderr}");
    assert!(stderr.contains("nothing was deleted"), "{stderr}");
    expect_dlq(&broker, ids(&[&placed[0]])).await;

    let (code, stdout, stderr) = shop(&["dlq", "purge", "inventory", "--all"], &broker.url, "y\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&placed[0].message_id.to_string()),
        "{stdout}"
    );
    assert!(dlq_ids(&broker).await.is_empty());
}

/// Publishes `count` dead letters of about 1 KB each to the inventory's DLQ in windows of
/// confirms (the one-at-a-time placer would take minutes), with two reasons alternating.
async fn place_many(broker: &TestBroker, count: usize) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let conn = broker.connect("bulk-placer").await;
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let dlq = broker.names.dlq("inventory");
    let mut event = OrderCreated {
        order_id: uuid::Uuid::now_v7().to_string(),
        customer_id: "c-1".into(),
        ..OrderCreated::default()
    };
    event.items = (0..20)
        .map(|i| LineItem {
            product_id: format!("product-{i:040}"),
            quantity: 1,
            unit_price_cents: 100,
        })
        .collect();
    let mut next = 0;
    while next < count {
        let window = (count - next).min(2_000);
        let mut confirms = Vec::with_capacity(window);
        for i in next..next + window {
            let envelope = Envelope::new(&event, "order", &EventContext::new_flow());
            let reason = if i % 2 == 0 {
                format!("handler failed: stock row {i} is locked")
            } else {
                "the body is not a valid shop.order.v1.OrderCreated".to_owned()
            };
            let properties = envelope::with_headers(
                &envelope.properties(0),
                [
                    (envelope::DEATH_REASON, envelope::long_string(&reason)),
                    (envelope::RETRY_COUNT, AMQPValue::LongInt(5)),
                    (
                        envelope::ORIGINAL_ROUTING_KEY,
                        envelope::long_string("order.created"),
                    ),
                ],
            );
            let confirm = channel
                .basic_publish(
                    "",
                    &dlq,
                    BasicPublishOptions::default(),
                    &envelope.payload,
                    properties,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirm.await.expect("confirmed");
        }
        next += window;
    }
    let _ = conn.close(200, "placed").await;
}

/// Runs the real binary under `/usr/bin/time`; returns its stdout and its peak resident
/// memory in MiB.
fn shop_measured(broker: &TestBroker, args: &[&str]) -> (String, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib %M"])
        .arg(env!("CARGO_BIN_EXE_shop"))
        .args(args)
        .env("AMQP_URL", &broker.url)
        .env("AMQP_PREFIX", &broker.names.prefix)
        .stdin(Stdio::null())
        .output()
        .expect("run shop under /usr/bin/time (Debian's package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shop {args:?} failed: {stderr}");
    let kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {stderr}"));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        kib / 1024,
    )
}

/// 100,000 dead letters of about 1 KB (100 MB of bodies, several hundred MB once decoded):
/// `list` and `replay --all` read them one at a time and keep only what they print, so the
/// command's memory stays far below the queue's size.
#[tokio::test]
async fn a_dlq_of_100000_messages_is_listed_and_replayed_in_bounded_memory() {
    const COUNT: usize = 100_000;
    const BOUND_MIB: u64 = 96;
    let broker = inventory_topology().await;
    place_many(&broker, COUNT).await;

    let (out, listed_mib) = shop_measured(&broker, &["dlq", "list", "--json"]);
    let inventory = json_lines(&out)
        .into_iter()
        .find(|q| q["queue"] == broker.names.dlq("inventory").as_str())
        .expect("inventory.dlq listed");
    assert_eq!(inventory["depth"], COUNT);
    assert_eq!(inventory["groups"][0]["count"], COUNT / 2);
    assert_eq!(inventory["groups"][1]["count"], COUNT / 2);
    eprintln!("shop dlq list of {COUNT} messages: peak RSS {listed_mib} MiB");
    assert!(
        listed_mib < BOUND_MIB,
        "list took {listed_mib} MiB for {COUNT} messages"
    );

    let (out, replayed_mib) = shop_measured(&broker, &["dlq", "replay", "inventory", "--all"]);
    assert!(out.contains(&format!("replayed {COUNT} messages")), "{out}");
    eprintln!("shop dlq replay --all of {COUNT} messages: peak RSS {replayed_mib} MiB");
    assert!(
        replayed_mib < BOUND_MIB,
        "replay took {replayed_mib} MiB for {COUNT} messages"
    );
    let tool = shop::cmd::inspect::broker::Broker::connect(&config(&broker), "dlq-test")
        .await
        .unwrap();
    assert_eq!(
        tool.depth(&broker.names.dlq("inventory")).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        tool.depth(&broker.names.queue("inventory")).await.unwrap(),
        Some(COUNT as u32)
    );
    tool.close().await;
}
