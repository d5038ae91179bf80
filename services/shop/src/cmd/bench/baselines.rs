//! The limits of the machine, measured in the same run as the benchmark, with the same
//! payload sizes: what RabbitMQ, PostgreSQL and tonic can do at all, with nothing of shop on
//! top. The saga's throughput is then reported as a fraction of the bound these imply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use shop_shared::messaging::connection;
use sqlx::PgPool;

/// What the baselines measured.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Baselines {
    /// Persistent messages published per second with confirms (pipelined) to a quorum queue.
    pub broker_publish_per_s: f64,
    /// Messages consumed and acknowledged per second from that queue (while publishing).
    pub broker_consume_per_s: f64,
    /// Two-insert transactions committed per second at the services' pool size.
    pub postgres_commits_per_s: f64,
    /// Unary tonic calls per second (a trivial handler).
    pub grpc_calls_per_s: f64,
}

/// The naive per-order cost: 3 publishes, 3 deliveries, 4 commits, 1 call (issue #6).
pub const PUBLISHES_PER_ORDER: f64 = 3.0;
/// See [`PUBLISHES_PER_ORDER`].
pub const DELIVERIES_PER_ORDER: f64 = 3.0;
/// See [`PUBLISHES_PER_ORDER`].
pub const COMMITS_PER_ORDER: f64 = 4.0;
/// See [`PUBLISHES_PER_ORDER`].
pub const CALLS_PER_ORDER: f64 = 1.0;

impl Baselines {
    /// Orders per second the baselines allow under the naive cost model when the resources
    /// share the machine: each baseline was measured with the whole machine to itself, so an
    /// order costs the sum of its parts' times (1/bound = Σ cost_i / rate_i).
    pub fn bound_orders_per_s(&self) -> f64 {
        let parts = [
            (PUBLISHES_PER_ORDER, self.broker_publish_per_s),
            (DELIVERIES_PER_ORDER, self.broker_consume_per_s),
            (COMMITS_PER_ORDER, self.postgres_commits_per_s),
            (CALLS_PER_ORDER, self.grpc_calls_per_s),
        ];
        let seconds_per_order: f64 = parts
            .iter()
            .map(|(cost, rate)| {
                if *rate > 0.0 {
                    cost / rate
                } else {
                    f64::INFINITY
                }
            })
            .sum();
        if seconds_per_order.is_finite() && seconds_per_order > 0.0 {
            1.0 / seconds_per_order
        } else {
            0.0
        }
    }

    /// The bound of the scarcest resource alone (as if each had its own machine).
    pub fn bottleneck_orders_per_s(&self) -> f64 {
        [
            self.broker_publish_per_s / PUBLISHES_PER_ORDER,
            self.broker_consume_per_s / DELIVERIES_PER_ORDER,
            self.postgres_commits_per_s / COMMITS_PER_ORDER,
            self.grpc_calls_per_s / CALLS_PER_ORDER,
        ]
        .into_iter()
        .fold(f64::INFINITY, f64::min)
    }
}

/// Publishes `messages` persistent messages of `payload_bytes` with confirms (at most
/// `window` unconfirmed) to a fresh quorum queue while a consumer acknowledges each one.
/// Returns (published/s, consumed/s).
pub async fn broker(
    url: &str,
    queue: &str,
    messages: u64,
    payload_bytes: usize,
    window: usize,
) -> anyhow::Result<(f64, f64)> {
    let conn = connection::connect(url, &format!("{queue}-baseline")).await?;
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions { nowait: false })
        .await?;
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(1000, BasicQosOptions { global: false })
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum".to_owned())),
    );
    publisher
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;

    let consumed = Arc::new(AtomicU64::new(0));
    let mut deliveries = consumer_channel
        .basic_consume(
            queue,
            "baseline",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let counter = consumed.clone();
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            // One ack per message, as a consumer without batching does.
            let _ = delivery.ack(BasicAckOptions { multiple: false }).await;
            if counter.fetch_add(1, Ordering::Relaxed) + 1 >= messages {
                break;
            }
        }
        start.elapsed()
    });

    let payload = vec![0x5a_u8; payload_bytes];
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/x-protobuf".into());
    let mut pending = futures::stream::FuturesUnordered::new();
    for _ in 0..messages {
        if pending.len() >= window
            && let Some(confirm) = pending.next().await
        {
            let _: lapin::publisher_confirm::Confirmation = confirm?;
        }
        let confirm = publisher
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                &payload,
                properties.clone(),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(confirm) = pending.next().await {
        confirm?;
    }
    let published_in = start.elapsed();
    let consumed_in = tokio::time::timeout(Duration::from_secs(120), consume)
        .await
        .map_err(|_| anyhow::anyhow!("the broker baseline's consumer did not finish"))??;
    // Close the consuming channel before deleting its queue: a queue deleted under a live
    // consumer makes the broker cancel it, which lapin does not expect.
    consumer_channel.close(200, "baseline done").await?;
    publisher
        .queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "baseline done").await;
    Ok((
        messages as f64 / published_in.as_secs_f64(),
        messages as f64 / consumed_in.as_secs_f64(),
    ))
}

/// Commits two-insert transactions from `workers` tasks for `seconds` on `pool`.
pub async fn postgres(
    pool: &PgPool,
    workers: usize,
    seconds: f64,
    payload_bytes: usize,
) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE IF NOT EXISTS baseline_a (id UUID PRIMARY KEY, payload BYTEA NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(pool)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS baseline_b (id UUID PRIMARY KEY, payload BYTEA NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(pool)
        .await?;
    let commits = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let pool = pool.clone();
        let commits = commits.clone();
        let payload = vec![0x5a_u8; payload_bytes];
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO baseline_a (id, payload) VALUES ($1, $2)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(&payload)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO baseline_b (id, payload) VALUES ($1, $2)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(&payload)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                commits.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE baseline_a, baseline_b")
        .execute(pool)
        .await?;
    Ok(commits.load(Ordering::Relaxed) as f64 / elapsed)
}

/// Unary calls per second to a trivial tonic service (gRPC health `Check`) from `workers`
/// tasks over `channels` connections for `seconds`.
pub async fn grpc(workers: usize, channels: usize, seconds: f64) -> anyhow::Result<f64> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                server_stop.cancelled_owned(),
            )
            .await
    });
    let mut clients = Vec::new();
    for _ in 0..channels.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        clients.push(HealthClient::new(channel));
    }
    let calls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..workers {
        let mut client = clients[i % clients.len()].clone();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                calls.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    Ok(calls.load(Ordering::Relaxed) as f64 / elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_sums_the_costs_of_shared_resources() {
        let b = Baselines {
            broker_publish_per_s: 30_000.0,
            broker_consume_per_s: 30_000.0,
            postgres_commits_per_s: 8_000.0,
            grpc_calls_per_s: 20_000.0,
        };
        // 3/30000 + 3/30000 + 4/8000 + 1/20000 = 0.00075 s per order
        assert!((b.bound_orders_per_s() - 1333.33).abs() < 0.1);
        assert!((b.bottleneck_orders_per_s() - 2000.0).abs() < 1e-9);
        assert_eq!(Baselines::default().bound_orders_per_s(), 0.0);
    }
}
