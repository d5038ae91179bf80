//! Driving CreateOrder and watching orders reach a terminal state.
//!
//! - Closed loop: `concurrency` callers, each placing its next order as soon as the previous
//!   call returned, until `orders` were placed: the maximum throughput.
//! - Open loop: orders offered on a fixed schedule (`rate` per second for `duration`), each
//!   call's latency measured from its scheduled time, so a slow system cannot slow the
//!   offered load down and hide its own latency (no coordinated omission).
//!
//! Terminal states are observed from the `order.confirmed` / `order.rejected` events on a
//! queue of the benchmark's own (not by polling each order).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use shop_proto::Event;
use shop_proto::order::v1::order_service_client::OrderServiceClient;
use shop_proto::order::v1::{CreateOrderRequest, LineItem, OrderConfirmed, OrderRejected};
use shop_shared::messaging::{Names, connection, envelope, topology};
use tonic::transport::Channel;

use super::setup::Customer;
use super::stats::Samples;

/// What the orders of a run are made of.
#[derive(Debug, Clone)]
pub struct OrderMix {
    /// The products to choose from.
    pub products: Vec<String>,
    /// Lines per order (distinct products, as far as there are enough); `None`: 1 to 3.
    pub lines: Option<usize>,
}

/// The `i`-th order of a run: distinct products (1–3, or `mix.lines`), quantity 1 or 2.
pub fn order_lines(i: usize, mix: &OrderMix) -> Vec<(String, i32)> {
    let products = &mix.products;
    let count = mix.lines.unwrap_or(1 + i % 3);
    let mut lines: Vec<(String, i32)> = Vec::with_capacity(count);
    for j in 0..count {
        let product = &products[(i * 7 + j * 13) % products.len()];
        if lines.iter().all(|(p, _)| p != product) {
            lines.push((product.clone(), 1 + (i % 2) as i32));
        }
    }
    lines
}

/// The request for the `i`-th order, placed by its customer with their own token.
pub fn order_request(
    i: usize,
    customers: &[Customer],
    mix: &OrderMix,
) -> tonic::Request<CreateOrderRequest> {
    let customer = &customers[i % customers.len()];
    let mut request = tonic::Request::new(order_body(i, &customer.user_id, mix));
    request
        .metadata_mut()
        .insert("authorization", customer.authorization.clone());
    request
}

/// The body of the `i`-th order for `customer_id`.
pub fn order_body(i: usize, customer_id: &str, mix: &OrderMix) -> CreateOrderRequest {
    CreateOrderRequest {
        customer_id: customer_id.to_owned(),
        items: order_lines(i, mix)
            .into_iter()
            .map(|(product_id, quantity)| LineItem {
                product_id,
                quantity,
                unit_price_cents: 100 + (i % 900) as i64,
            })
            .collect(),
        idempotency_key: String::new(),
    }
}

/// When each order reached its terminal state, as seen on the broker.
#[derive(Clone, Default)]
pub struct Observer {
    terminal: Arc<Mutex<HashMap<String, (Instant, bool)>>>,
    count: Arc<AtomicUsize>,
    connection: Option<Arc<lapin::Connection>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("count", &self.count())
            .finish()
    }
}

impl Observer {
    /// Binds an exclusive queue to `order.confirmed` and `order.rejected` and records every
    /// one that arrives.
    pub async fn start(amqp_url: &str, names: &Names) -> anyhow::Result<Self> {
        let conn =
            connection::connect(amqp_url, &names.connection_name("bench", "observer")).await?;
        let channel = conn.create_channel().await?;
        let queue = topology::declare_tap(
            &channel,
            names,
            &[OrderConfirmed::ROUTING_KEY, OrderRejected::ROUTING_KEY],
        )
        .await?;
        let mut deliveries = channel
            .basic_consume(
                &queue,
                "bench-observer",
                BasicConsumeOptions {
                    no_ack: true, // an observer: losing nothing matters less than speed here
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let observer = Self {
            connection: Some(Arc::new(conn)),
            ..Self::default()
        };
        let sink = observer.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let at = Instant::now();
                let kind = delivery
                    .properties
                    .kind()
                    .as_ref()
                    .map(|k| k.as_str().to_owned());
                let decoded = match kind.as_deref() {
                    Some(OrderConfirmed::TYPE_NAME) => {
                        envelope::decode_body::<OrderConfirmed>(&delivery.data)
                            .map(|e| (e.order_id, true))
                            .ok()
                    }
                    Some(OrderRejected::TYPE_NAME) => {
                        envelope::decode_body::<OrderRejected>(&delivery.data)
                            .map(|e| (e.order_id, false))
                            .ok()
                    }
                    _ => None,
                };
                if let Some((order_id, confirmed)) = decoded {
                    let mut terminal = sink.terminal.lock().unwrap_or_else(|p| p.into_inner());
                    if terminal.insert(order_id, (at, confirmed)).is_none() {
                        sink.count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(observer)
    }

    /// Closes the observer's connection (its consumer ends).
    pub async fn close(&self) {
        if let Some(conn) = &self.connection {
            let _ = conn.close(200, "bench done").await;
        }
    }

    /// Terminal orders seen so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// When `order_id` became terminal, and whether it was confirmed.
    pub fn terminal(&self, order_id: &str) -> Option<(Instant, bool)> {
        self.terminal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(order_id)
            .copied()
    }
}

/// What one phase of load did.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    /// Orders accepted (CreateOrder succeeded).
    pub placed: Vec<(String, Instant)>,
    /// CreateOrder calls that failed.
    pub failures: usize,
    /// The first call's start (or scheduled time).
    pub started: Instant,
    /// When the last call returned.
    pub calls_done: Instant,
    /// CreateOrder latencies.
    pub call_latency: Samples,
}

/// A progress line on stderr: sent, terminal, rate.
pub fn progress(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {bar:30} {pos}/{len} sent  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Closed loop: `concurrency` callers place `orders` orders (numbered from `first`).
pub async fn closed_loop(
    channels: Vec<Channel>,
    customers: Arc<Vec<Customer>>,
    mix: Arc<OrderMix>,
    first: usize,
    orders: usize,
    concurrency: usize,
    bar: ProgressBar,
) -> PhaseOutcome {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let mut client = OrderServiceClient::new(channels[w % channels.len()].clone());
        let (next, customers, mix, bar) =
            (next.clone(), customers.clone(), mix.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            let mut latency = Samples::default();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let request = order_request(first + i, &customers, &mix);
                let start = Instant::now();
                match client.create_order(request).await {
                    Ok(response) => {
                        latency.record(start.elapsed());
                        if let Some(order) = response.into_inner().order {
                            placed.push((order.order_id, start));
                        }
                    }
                    Err(status) => {
                        failures += 1;
                        tracing::warn!(%status, "CreateOrder failed");
                    }
                }
                bar.inc(1);
            }
            (placed, latency, failures)
        }));
    }
    let mut outcome = PhaseOutcome {
        placed: Vec::with_capacity(orders),
        failures: 0,
        started,
        calls_done: started,
        call_latency: Samples::default(),
    };
    for worker in workers {
        if let Ok((placed, latency, failures)) = worker.await {
            outcome.placed.extend(placed);
            outcome.call_latency.extend(latency);
            outcome.failures += failures;
        }
    }
    outcome.calls_done = Instant::now();
    outcome
}

/// Open loop: one order every `1/rate` seconds for `duration`, numbered from `first`.
pub async fn open_loop(
    channels: Vec<Channel>,
    customers: Arc<Vec<Customer>>,
    mix: Arc<OrderMix>,
    first: usize,
    rate: f64,
    duration: Duration,
    bar: ProgressBar,
) -> PhaseOutcome {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let mut client = OrderServiceClient::new(channels[i % channels.len()].clone());
        let request = order_request(first + i, &customers, &mix);
        let bar = bar.clone();
        calls.push(tokio::spawn(async move {
            let result = client.create_order(request).await;
            bar.inc(1);
            // Latency from the scheduled time, not from when the call got going.
            (scheduled, scheduled.elapsed(), result)
        }));
    }
    let mut outcome = PhaseOutcome {
        placed: Vec::with_capacity(total),
        failures: 0,
        started,
        calls_done: started,
        call_latency: Samples::default(),
    };
    for call in calls {
        match call.await {
            Ok((scheduled, latency, Ok(response))) => {
                outcome.call_latency.record(latency);
                if let Some(order) = response.into_inner().order {
                    outcome.placed.push((order.order_id, scheduled));
                }
            }
            Ok((_, _, Err(status))) => {
                outcome.failures += 1;
                tracing::warn!(%status, "CreateOrder failed");
            }
            Err(_) => outcome.failures += 1,
        }
    }
    outcome.calls_done = Instant::now();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_have_one_to_three_distinct_products() {
        let mix = OrderMix {
            products: (0..5).map(|p| format!("p{p}")).collect(),
            lines: None,
        };
        for i in 0..100 {
            let lines = order_lines(i, &mix);
            assert!((1..=3).contains(&lines.len()));
            let mut names: Vec<&String> = lines.iter().map(|(p, _)| p).collect();
            names.dedup();
            assert_eq!(names.len(), lines.len());
        }
        let ten = OrderMix {
            products: (0..200).map(|p| format!("p{p}")).collect(),
            lines: Some(10),
        };
        assert_eq!(order_lines(3, &ten).len(), 10);
        let hot = OrderMix {
            products: vec!["hot".into()],
            lines: Some(10),
        };
        assert_eq!(order_lines(3, &hot), [("hot".to_owned(), 2)]);
    }
}
