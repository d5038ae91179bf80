//! The operator's tools against the whole running system: `shop dlq replay` brings a failed
//! order back into the saga exactly once, and `shop events tail` shows a saga's events with
//! their ids as they pass, and `shop schedule` lists, shows and cancels an order's
//! reservation deadline.

use std::time::Duration;

use clap::Parser as _;
use serde_json::Value;
use shop::cmd::dlq::DlqArgs;
use shop::cmd::events::Tail;
use shop_proto::Event as _;
use shop_proto::inventory::v1::StockReserved;
use shop_proto::order::v1::{OrderCreated, OrderStatus};
use shop_shared::config::AmqpConfig;
use shop_shared::messaging::{EventContext, envelope, outbox};
use shop_shared::testing::{
    EventProbe, Received, TestBroker, TestDatabase, eventually, metric, place_in_queue, scrape,
};
use shop_tests::{TestSystem, WAIT};
use tokio_util::sync::CancellationToken;

fn config(system: &TestSystem) -> AmqpConfig {
    AmqpConfig {
        url: system.broker.url.clone(),
        prefix: system.broker.names.prefix.clone(),
    }
}

async fn dlq(system: &TestSystem, args: &[&str]) -> String {
    let parsed = DlqArgs::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
        .expect("valid arguments");
    let mut out = Vec::new();
    shop::cmd::dlq::run(parsed, &config(system), &mut out)
        .await
        .unwrap_or_else(|e| panic!("shop dlq {args:?}: {e:#}"));
    String::from_utf8(out).expect("UTF-8")
}

/// Puts a delivery in the inventory's DLQ as the consumer does after its last attempt.
async fn dead_letter(system: &TestSystem, received: &Received) {
    let properties = envelope::with_headers(
        &received.properties,
        [
            (
                envelope::DEATH_REASON,
                envelope::long_string("handler failed: the database was away (after 5 attempts)"),
            ),
            (
                envelope::DEATH_TIME,
                envelope::long_string(&envelope::rfc3339_now()),
            ),
            (envelope::RETRY_COUNT, lapin::types::AMQPValue::LongInt(5)),
            (
                envelope::ORIGINAL_ROUTING_KEY,
                envelope::long_string(&received.routing_key),
            ),
        ],
    );
    place_in_queue(
        &system.broker,
        &system.broker.names.dlq("inventory"),
        &received.body,
        properties,
    )
    .await;
}

/// The inventory's count of deliveries of `order.created` with `outcome`.
async fn processed(system: &TestSystem, outcome: &str) -> f64 {
    let text = scrape(system.http.inventory).await;
    metric(
        &text,
        "messaging_process_duration_seconds_count",
        &[
            (
                "messaging_destination_name",
                system.broker.names.queue("inventory").as_str(),
            ),
            ("routing_key", OrderCreated::ROUTING_KEY),
            ("outcome", outcome),
        ],
    )
}

#[tokio::test]
async fn a_replayed_order_created_is_applied_once_and_completes_its_saga() {
    // Arrange: an order whose order.created never reached the inventory: it failed and was
    // dead-lettered (moved here by hand from the queue of the inventory, which is held back).
    let mut system = TestSystem::start_holding_back_inventory().await;
    let customer = system.customer().await;
    let order = system.order(&customer, &[("dlq-widget", 2)]).await;
    let mut inventory_queue =
        EventProbe::queue(&system.broker, &system.broker.names.queue("inventory")).await;
    let mut failed = None;
    while failed.is_none() {
        let received = inventory_queue
            .expect(WAIT, "the order's order.created")
            .await;
        dead_letter(&system, &received).await;
        if received.decode::<OrderCreated>().order_id == order.order_id {
            failed = Some(received);
        }
    }
    drop(inventory_queue);
    let failed = failed.expect("the order's order.created");
    let message_id = failed.meta().message_id;
    system.release_inventory();
    system.stock_up("dlq-widget", 5).await;
    assert_eq!(system.stock("dlq-widget").await, (5, 0));

    // `show` decodes it.
    let shown: Vec<Value> = dlq(&system, &["show", "inventory", "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let letter = shown
        .iter()
        .find(|m| m["message_id"] == message_id.as_str())
        .expect("the order's message is in the DLQ");
    assert_eq!(letter["body"]["orderId"], order.order_id.as_str());
    assert_eq!(letter["routing_key"], "order.created");

    // Act: replay it, with a subscriber of every event watching.
    let mut everything = EventProbe::bind(&system.broker, &["#"]).await;
    let out = dlq(
        &system,
        &["replay", "inventory", "--message-id", &message_id],
    )
    .await;
    assert!(out.contains("replayed 1 message"), "{out}");

    // Assert: the saga completes, the stock moved once, the copy went to no other queue.
    let settled = system.settled(&order.order_id).await;
    assert_eq!(settled.status, OrderStatus::Confirmed as i32);
    assert_eq!(system.stock("dlq-widget").await, (3, 2));
    let mut reserved = 0;
    loop {
        let seen = everything.expect(WAIT, "the saga's events").await;
        assert_ne!(
            seen.meta().message_id,
            message_id,
            "the replayed copy reached a subscriber of shop.events"
        );
        if seen.routing_key == StockReserved::ROUTING_KEY {
            reserved += 1;
        }
        if seen.routing_key == "order.confirmed" {
            break;
        }
    }
    assert_eq!(reserved, 1);

    // A second replay of the same message (it failed again, say) changes nothing: the inbox
    // knows it.
    let duplicates_before = processed(&system, "duplicate").await;
    dead_letter(&system, &failed).await;
    dlq(
        &system,
        &["replay", "inventory", "--message-id", &message_id],
    )
    .await;
    eventually(WAIT, "the inventory to see the duplicate", || async {
        (processed(&system, "duplicate").await > duplicates_before).then_some(())
    })
    .await;
    assert_eq!(system.stock("dlq-widget").await, (3, 2));
    let sent = metric(
        &scrape(system.http.inventory).await,
        "messaging_client_sent_messages_total",
        &[("routing_key", StockReserved::ROUTING_KEY)],
    );
    assert_eq!(sent, 1.0, "one inventory.reserved for the order, ever");
    // The customer probe's order.created was not picked: it is still there.
    let left = dlq(&system, &["show", "inventory", "--json"]).await;
    assert_eq!(left.lines().count(), 1, "{left}");
    system.stop().await;
}

#[tokio::test]
async fn events_tail_prints_the_events_of_a_saga_with_their_ids() {
    let system = TestSystem::start().await;
    let customer = system.customer().await;
    system.stock_up("tail-widget", 5).await;
    // Let the customer probe's own saga finish before the tail starts.
    let mut orders = system.clients.order.clone();
    let probe = orders
        .create_order(shop_proto::order::v1::CreateOrderRequest {
            customer_id: customer.clone(),
            items: vec![shop_proto::order::v1::LineItem {
                product_id: "__probe__".into(),
                quantity: 1,
                unit_price_cents: 0,
            }],
            idempotency_key: "__customer_known_probe__".into(),
        })
        .await
        .expect("the probe order")
        .into_inner()
        .order
        .expect("an order");
    system.settled(&probe.order_id).await;

    let tail = Tail::bind(&config(&system), &["order.*".into(), "inventory.*".into()])
        .await
        .expect("the tail binds");
    let printing = tokio::spawn(async move {
        let mut out = Vec::new();
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            tail.print(true, Some(3), CancellationToken::new(), &mut out),
        )
        .await;
        (result, out)
    });
    let order = system.order(&customer, &[("tail-widget", 1)]).await;
    let (result, out) = printing.await.expect("the tail task");
    result
        .expect("three events within the deadline")
        .expect("the tail ran");
    let lines: Vec<Value> = String::from_utf8(out)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["routing_key"].as_str().unwrap_or_default(),
                l["type"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("order.created", "shop.order.v1.OrderCreated"),
            ("inventory.reserved", "shop.inventory.v1.StockReserved"),
            ("order.confirmed", "shop.order.v1.OrderConfirmed"),
        ]
    );
    let correlation = lines[0]["correlation_id"]
        .as_str()
        .expect("a correlation id");
    for (line, cause) in lines.iter().zip([None, Some(0), Some(1)]) {
        assert_eq!(line["correlation_id"], correlation, "one flow: {line}");
        assert_eq!(line["body"]["orderId"], order.order_id.as_str(), "{line}");
        assert!(line["message_id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(
            line["actor_id"].as_str().is_some_and(|a| !a.is_empty()),
            "{line}"
        );
        // The trace id is the one of its traceparent header (none without a tracer).
        match line["headers"]["traceparent"].as_str() {
            Some(parent) => assert_eq!(line["trace_id"], parent[3..35], "{line}"),
            None => assert_eq!(line["trace_id"], Value::Null, "{line}"),
        }
        if let Some(cause) = cause {
            assert_eq!(line["causation_id"], lines[cause]["message_id"], "{line}");
        }
    }
    system.stop().await;
}

async fn schedule(pool: &sqlx::PgPool, args: &[&str]) -> anyhow::Result<String> {
    let parsed = shop::cmd::schedule::ScheduleArgs::try_parse_from(
        std::iter::once("schedule").chain(args.iter().copied()),
    )?;
    let mut out = Vec::new();
    shop::cmd::schedule::run_with(parsed, pool, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn shop_schedule_lists_shows_and_cancels_a_pending_orders_deadline() {
    // The inventory held back: the order stays PENDING, its deadline scheduled.
    let system = TestSystem::start_holding_back_inventory().await;
    let customer = system.customer().await;
    let order = system.order(&customer, &[("deadline-product", 1)]).await;
    let key = format!("order.reservation_deadline:{}", order.order_id);
    let pool = sqlx::PgPool::connect(&system.databases[1].url)
        .await
        .expect("the order database");

    let listed: Vec<Value> = schedule(&pool, &["list", "--json"])
        .await
        .expect("list")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let mine = listed
        .iter()
        .find(|s| s["key"] == key.as_str())
        .unwrap_or_else(|| panic!("{key} listed: {listed:?}"));
    assert_eq!(mine["type"], "shop.order.v1.ReservationDeadline");
    let message_id = mine["message_id"].as_str().expect("an id").to_owned();

    let shown: Value = serde_json::from_str(
        &schedule(&pool, &["show", &message_id, "--json"])
            .await
            .expect("show"),
    )
    .expect("JSON");
    assert_eq!(shown["body"]["orderId"], order.order_id.as_str());
    assert_eq!(shown["body"]["timeoutSeconds"], "300");

    let cancelled = schedule(&pool, &["cancel", &key]).await.expect("cancel");
    assert!(cancelled.contains(&key), "{cancelled}");
    let again = schedule(&pool, &["cancel", &key]).await;
    assert!(
        again
            .expect_err("nothing left to cancel")
            .to_string()
            .contains("nothing is scheduled"),
    );
    let text = schedule(&pool, &["list"]).await.expect("list");
    assert!(!text.contains(&key), "{text}");
    let bad = schedule(&pool, &["show", "not-an-id"]).await;
    assert!(
        bad.expect_err("not a UUID")
            .to_string()
            .contains("is not a message id")
    );
    system.stop().await;
}

async fn topology(broker: &TestBroker, args: &[&str]) -> anyhow::Result<String> {
    let parsed = shop::cmd::topology::TopologyArgs::try_parse_from(
        std::iter::once("topology").chain(args.iter().copied()),
    )?;
    let config = AmqpConfig {
        url: broker.url.clone(),
        prefix: broker.names.prefix.clone(),
    };
    let mut out = Vec::new();
    shop::cmd::topology::run(parsed, &config, None, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn shop_topology_apply_declares_every_consumers_queue_and_its_bindings() {
    // Arrange: a broker prefix on which no service ever started.
    let broker = TestBroker::new();
    let missing = topology(&broker, &["check"]).await.unwrap_err().to_string();
    assert!(missing.contains("missing on"), "{missing}");
    assert!(
        missing.contains(&broker.names.queue("inventory")),
        "{missing}"
    );

    // Act
    let applied = topology(&broker, &["apply", "--json"])
        .await
        .expect("apply");

    // Assert: one line per consuming service, and the broker holds what they say.
    let lines: Vec<Value> = applied
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{applied}");
    for consumer in shop_shared::messaging::topology::CONSUMERS {
        let queue = broker.names.queue(consumer.service);
        let line = lines
            .iter()
            .find(|l| l["queue"] == queue.as_str())
            .unwrap_or_else(|| panic!("{queue} in {applied}"));
        assert_eq!(line["dlq"], broker.names.dlq(consumer.service).as_str());
        let mut expected: Vec<String> = consumer
            .routing_keys
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        expected.sort();
        assert_eq!(broker.bindings_of(&queue), expected, "{queue}");
    }
    assert_eq!(
        topology(&broker, &["check"]).await.expect("check").trim(),
        "every consuming service's queue exists"
    );
    // Applying again changes nothing and succeeds.
    topology(&broker, &["apply"]).await.expect("apply again");
}

async fn outbox(pool: &sqlx::PgPool, args: &[&str]) -> anyhow::Result<String> {
    let parsed = shop::cmd::outbox::OutboxArgs::try_parse_from(
        std::iter::once("outbox").chain(args.iter().copied()),
    )?;
    let mut out = Vec::new();
    shop::cmd::outbox::run_with(parsed, pool, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn shop_outbox_lists_parked_rows_and_returns_them_to_the_relay() {
    // Arrange: an outbox with one row parked after failed publishes, one waiting.
    let (_db, pool) = TestDatabase::migrated(None).await;
    let mut tx = pool.begin().await.unwrap();
    let context = EventContext::new_flow();
    let parked_id = outbox::stage(&mut tx, &OrderCreated::default(), &context)
        .await
        .unwrap()
        .to_string();
    let waiting_id = outbox::stage(&mut tx, &OrderCreated::default(), &context)
        .await
        .unwrap()
        .to_string();
    tx.commit().await.unwrap();
    sqlx::query(
        "UPDATE outbox SET dead = true, attempts = 10, last_error = 'routing key is 300 bytes' \
         WHERE message_id = $1::uuid",
    )
    .bind(&parked_id)
    .execute(&pool)
    .await
    .unwrap();

    // Act and assert: listed with its error, then returned with its attempts reset.
    let listed: Vec<Value> = outbox(&pool, &["parked", "--json"])
        .await
        .expect("parked")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["message_id"], parked_id.as_str());
    assert_eq!(listed[0]["attempts"], 10);
    assert_eq!(listed[0]["last_error"], "routing key is 300 bytes");

    let refused = outbox(&pool, &["unpark", &waiting_id])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("no such parked row"), "{refused}");
    let bad = outbox(&pool, &["unpark", "not-an-id"])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("is not a message id"), "{bad}");

    let returned = outbox(&pool, &["unpark", &parked_id])
        .await
        .expect("unpark");
    assert_eq!(returned.trim(), "returned 1 parked row(s) to the relay");
    let (dead, attempts): (bool, i32) =
        sqlx::query_as("SELECT dead, attempts FROM outbox WHERE message_id = $1::uuid")
            .bind(&parked_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((dead, attempts), (false, 0));
    assert_eq!(
        outbox(&pool, &["parked"]).await.expect("parked").trim(),
        "no row is parked"
    );
}
