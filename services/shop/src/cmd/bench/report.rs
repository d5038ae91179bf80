//! Running the phases in order and reporting them: a table for people, one JSON object for
//! comparing runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::baselines::{self, Baselines};
use super::consistency::{self, Consistency};
use super::cpu;
use super::hops::{self, HopRecorder};
use super::load::{self, Observer, PhaseOutcome};
use super::setup::{self, Target};
use super::stats::{Percentiles, Samples};
use super::{BenchArgs, Plan};

/// The figures of one load phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseReport {
    /// Orders accepted by CreateOrder.
    pub orders: usize,
    /// CreateOrder calls that failed.
    pub failures: usize,
    /// Offered rate (open loop) or 0 (closed loop).
    pub offered_per_s: f64,
    /// Concurrent callers (closed loop) or 0 (open loop: calls start on schedule, however
    /// many are still in flight).
    pub concurrency: usize,
    /// Seconds from the first call to the last terminal state.
    pub seconds: f64,
    /// CreateOrder calls completed per second.
    pub calls_per_s: f64,
    /// Orders that reached CONFIRMED or REJECTED per second (saga completions).
    pub orders_per_s: f64,
    /// Events published per second (outbox rows of the phase, all services).
    pub events_per_s: f64,
    /// CreateOrder latency.
    pub create_order: Percentiles,
    /// Call to terminal state.
    pub end_to_end: Percentiles,
    /// Orders that never reached a terminal state within the deadline.
    pub unfinished: usize,
    /// CPU seconds of the services (not the load generator) per order.
    pub cpu_s_per_order: f64,
    /// Unpublished outbox rows when the last order became terminal.
    pub outbox_unpublished_at_end: i64,
    /// Age of the oldest unpublished outbox row then, in milliseconds (0 when none).
    pub outbox_lag_ms: f64,
    /// Per hop of the saga ([`hops::HOPS`]), when the phase collected them.
    pub hops: Vec<Percentiles>,
    /// The broker's confirm of each publish of those sagas.
    pub broker_confirm: Percentiles,
    /// Sagas the hops were measured on.
    pub hop_sagas: usize,
    /// Threads of the process at the end of the phase's calls.
    pub threads: usize,
    /// Broker connections the services hold (the benchmark's own observer left out).
    pub amqp_connections: usize,
    /// Context switches of the services' threads over the phase, per order placed.
    pub context_switches_per_order: f64,
}

/// A whole run.
#[derive(Debug)]
pub struct Report {
    /// The baselines, when measured.
    pub baselines: Option<Baselines>,
    /// The closed-loop phase.
    pub closed: Option<PhaseReport>,
    /// The open-loop phase.
    pub open: Option<PhaseReport>,
    /// The invariants after the run.
    pub consistency: Consistency,
    /// Whether every invariant held.
    pub consistent: bool,
    /// The git commit of the code measured.
    pub commit: String,
    /// Cores of the machine.
    pub cores: usize,
    /// `--lines`.
    pub lines: Option<usize>,
    /// `--products`.
    pub products: usize,
}

impl Report {
    /// Runs the plan against a fresh (or the given) system.
    pub async fn run(args: &BenchArgs, plan: &Plan, hops: &HopRecorder) -> anyhow::Result<Self> {
        let target = setup::start(args.target.as_deref()).await?;
        let result = Self::run_on(&target, args, plan, hops).await;
        target.finish().await?;
        result
    }

    async fn run_on(
        target: &Target,
        args: &BenchArgs,
        plan: &Plan,
        hops: &HopRecorder,
    ) -> anyhow::Result<Self> {
        // Baselines first, on the same broker and database, just before the load.
        let baselines = if plan.baselines {
            eprintln!("measuring baselines ({} s each) …", args.baseline_seconds);
            Some(measure_baselines(target, args.baseline_seconds).await?)
        } else {
            None
        };

        let closed_orders = plan.closed.map_or(0, |(n, _)| n);
        let open_orders = plan
            .open
            .map_or(0, |(rate, d)| (rate * d.as_secs_f64()).round() as usize);
        let products: Vec<String> = (0..args.products)
            .map(|p| format!("bench-{}-p{p}", target.run_id))
            .collect();
        let planned = load::OrderMix {
            products: products.clone(),
            lines: args.lines,
        };
        // Exactly what the planned orders need: every order can be confirmed, and the stock
        // arithmetic after the run is exact to the unit.
        let mut stock: BTreeMap<String, i64> = BTreeMap::new();
        for i in 0..closed_orders + open_orders {
            for (product, quantity) in load::order_lines(i, &planned) {
                *stock.entry(product).or_default() += i64::from(quantity);
            }
        }
        eprintln!(
            "seeding {} users and {} products …",
            args.users,
            products.len()
        );
        let seed = setup::seed(target, args.users, &products, &stock).await?;
        let observer = Observer::start(&target.amqp_url, &target.names).await?;

        let load_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(cpu::LOAD_THREAD_PREFIX)
            .enable_all()
            .build()
            .context("failed to start the load generator's runtime")?;
        let users = Arc::new(seed.customers.clone());
        let mix = Arc::new(load::OrderMix {
            products: seed.products.clone(),
            lines: args.lines,
        });
        let mut all_orders = Vec::new();
        let rig = Rig {
            target,
            observer: &observer,
            load_runtime: &load_runtime,
        };

        let closed = match plan.closed {
            Some((orders, concurrency)) => {
                let (mut report, ids) = phase(&rig, None, "max", orders, 0.0, {
                    let (users, mix) = (users.clone(), mix.clone());
                    let addr = target.addresses.order;
                    move |bar| async move {
                        let channels = channels(addr).await;
                        load::closed_loop(channels, users, mix, 0, orders, concurrency, bar).await
                    }
                })
                .await?;
                report.concurrency = concurrency;
                all_orders.extend(ids);
                Some(report)
            }
            None => None,
        };
        if plan.closed.is_some() && plan.open.is_some() {
            // The closed loop leaves queues behind it (the notification service lags the
            // saga at full speed); the fixed rate measures everyday load, not that backlog.
            drain_queues(target).await?;
        }
        let open = match plan.open {
            Some((rate, duration)) => {
                let total = (rate * duration.as_secs_f64()).round() as usize;
                let (report, ids) = phase(&rig, Some(hops), "rate", total, rate, {
                    let (users, mix) = (users.clone(), mix.clone());
                    let addr = target.addresses.order;
                    move |bar| async move {
                        let channels = channels(addr).await;
                        load::open_loop(channels, users, mix, closed_orders, rate, duration, bar)
                            .await
                    }
                })
                .await?;
                all_orders.extend(ids);
                Some(report)
            }
            None => None,
        };
        load_runtime.shutdown_background();
        observer.close().await;

        eprintln!("checking consistency …");
        let consistency =
            consistency::check(target, &all_orders, &stock, Duration::from_secs(60)).await?;
        Ok(Self {
            baselines,
            closed,
            open,
            consistent: consistency.ok(),
            consistency,
            commit: git_commit(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lines: args.lines,
            products: args.products,
        })
    }

    /// The saga's closed-loop throughput as a fraction of the baselines' bound.
    pub fn fraction_of_bound(&self) -> Option<f64> {
        let bound = self.baselines?.bound_orders_per_s();
        let achieved = self.closed.as_ref()?.orders_per_s;
        (bound > 0.0).then(|| achieved / bound)
    }

    /// One flat JSON object with every figure.
    pub fn json(&self) -> serde_json::Value {
        let closed = self.closed.clone().unwrap_or_default();
        let open = self.open.clone().unwrap_or_default();
        let b = self.baselines.unwrap_or_default();
        // The process figures of the fixed-rate phase (the everyday load), else of the other.
        let process = if self.open.is_some() { &open } else { &closed };
        let mut hop_figures = serde_json::Map::new();
        for ((name, _), p) in hops::HOPS.iter().zip(&open.hops) {
            hop_figures.insert(format!("hop_{name}_p50_ms"), json!(p.p50_ms));
            hop_figures.insert(format!("hop_{name}_p99_ms"), json!(p.p99_ms));
        }
        let mut out = json!({
            "consistent": self.consistent,
            "commit": self.commit,
            "cores": self.cores,
            "orders": closed.orders,
            "orders_per_s": closed.orders_per_s,
            "concurrency": closed.concurrency,
            "events_per_s": closed.events_per_s,
            "calls_per_s": closed.calls_per_s,
            "create_order_p50_ms": closed.create_order.p50_ms,
            "create_order_p90_ms": closed.create_order.p90_ms,
            "create_order_p99_ms": closed.create_order.p99_ms,
            "create_order_max_ms": closed.create_order.max_ms,
            "e2e_p50_ms": closed.end_to_end.p50_ms,
            "e2e_p90_ms": closed.end_to_end.p90_ms,
            "e2e_p99_ms": closed.end_to_end.p99_ms,
            "e2e_max_ms": closed.end_to_end.max_ms,
            "cpu_s_per_order": closed.cpu_s_per_order,
            "outbox_unpublished_at_end": closed.outbox_unpublished_at_end,
            "outbox_lag_ms": closed.outbox_lag_ms,
            "failures": closed.failures + open.failures,
            "unfinished": closed.unfinished + open.unfinished,
            "rate_offered_per_s": open.offered_per_s,
            "rate_orders": open.orders,
            "rate_orders_per_s": open.orders_per_s,
            "rate_create_order_p50_ms": open.create_order.p50_ms,
            "rate_create_order_p99_ms": open.create_order.p99_ms,
            "rate_create_order_max_ms": open.create_order.max_ms,
            "rate_e2e_p50_ms": open.end_to_end.p50_ms,
            "rate_e2e_p99_ms": open.end_to_end.p99_ms,
            "rate_e2e_max_ms": open.end_to_end.max_ms,
            "rate_cpu_s_per_order": open.cpu_s_per_order,
            "baseline_broker_publish_per_s": b.broker_publish_per_s,
            "baseline_broker_consume_per_s": b.broker_consume_per_s,
            "baseline_postgres_commits_per_s": b.postgres_commits_per_s,
            "baseline_grpc_calls_per_s": b.grpc_calls_per_s,
            "bound_orders_per_s": b.bound_orders_per_s(),
            "bottleneck_orders_per_s": if self.baselines.is_some() { b.bottleneck_orders_per_s() } else { 0.0 },
            "fraction_of_bound": self.fraction_of_bound().unwrap_or(0.0),
            "confirmed": self.consistency.confirmed,
            "rejected": self.consistency.rejected,
            "dead_letters": self.consistency.dead_letters,
            "problems": self.consistency.problems,
            "rate_hop_sagas": open.hop_sagas,
            "hop_broker_confirm_p50_ms": open.broker_confirm.p50_ms,
            "hop_broker_confirm_p99_ms": open.broker_confirm.p99_ms,
            "threads": process.threads,
            "amqp_connections": process.amqp_connections,
            "context_switches_per_order": process.context_switches_per_order,
            "max_context_switches_per_order": closed.context_switches_per_order,
            "lines_per_order": self.lines.map_or(json!("1-3"), |l| json!(l)),
            "products": self.products,
        });
        if let Some(object) = out.as_object_mut() {
            object.extend(hop_figures);
        }
        out
    }

    /// The table for people.
    pub fn print_table(&self) {
        println!("shop bench  commit {}  cores {}", self.commit, self.cores);
        if let Some(b) = &self.baselines {
            println!("\nbaselines (same broker, database, machine; nothing of shop on top)");
            println!(
                "  broker publish, confirmed, quorum   {:>10.0} msg/s",
                b.broker_publish_per_s
            );
            println!(
                "  broker consume, acked, quorum       {:>10.0} msg/s",
                b.broker_consume_per_s
            );
            println!(
                "  postgres two-insert commits         {:>10.0} tx/s",
                b.postgres_commits_per_s
            );
            println!(
                "  tonic unary calls                   {:>10.0} calls/s",
                b.grpc_calls_per_s
            );
            println!(
                "  bound (3 publishes + 3 deliveries + 4 commits + 1 call per order, shared machine) {:>8.0} orders/s",
                b.bound_orders_per_s()
            );
        }
        for (name, phase) in [
            ("max throughput (closed loop)", &self.closed),
            ("fixed rate (open loop)", &self.open),
        ] {
            let Some(p) = phase else { continue };
            println!("\n{name}");
            if p.offered_per_s > 0.0 {
                println!(
                    "  offered                 {:>10.1} orders/s for {:.0} s (calls start on schedule, however many are in flight)",
                    p.offered_per_s,
                    (p.orders + p.failures) as f64 / p.offered_per_s
                );
            }
            if p.concurrency > 0 {
                println!(
                    "  concurrency             {:>10}   callers, each placing its next order when the last one answered",
                    p.concurrency
                );
            }
            println!(
                "  orders                  {:>10}   ({} failed calls, {} unfinished)",
                p.orders, p.failures, p.unfinished
            );
            println!(
                "  saga completions        {:>10.1} orders/s",
                p.orders_per_s
            );
            println!("  CreateOrder calls       {:>10.1} calls/s", p.calls_per_s);
            println!(
                "  events published        {:>10.1} events/s",
                p.events_per_s
            );
            println!(
                "  CreateOrder latency     p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                p.create_order.p50_ms,
                p.create_order.p90_ms,
                p.create_order.p99_ms,
                p.create_order.max_ms
            );
            println!(
                "  call → terminal state   p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                p.end_to_end.p50_ms, p.end_to_end.p90_ms, p.end_to_end.p99_ms, p.end_to_end.max_ms
            );
            println!(
                "  services' CPU           {:>10.2} ms/order   (CPU time of the services' threads, not the load generator's, over the phase, per order placed)",
                p.cpu_s_per_order * 1000.0
            );
            println!(
                "  outbox at the end       {:>10} unpublished, oldest {:.0} ms",
                p.outbox_unpublished_at_end, p.outbox_lag_ms
            );
            println!(
                "  process                 {:>10}   threads, {} broker connections, {:.1} context switches/order",
                p.threads, p.amqp_connections, p.context_switches_per_order
            );
            if !p.hops.is_empty() {
                println!(
                    "  where an order's time goes ({} confirmed sagas, from their spans)",
                    p.hop_sagas
                );
                for ((_, what), h) in hops::HOPS.iter().zip(&p.hops) {
                    println!(
                        "    {what:<56} p50 {:>6.1} ms  p99 {:>6.1} ms",
                        h.p50_ms, h.p99_ms
                    );
                }
                println!(
                    "    {:<56} p50 {:>6.1} ms  p99 {:>6.1} ms",
                    "(of a relay hop: the broker's confirm of a publish)",
                    p.broker_confirm.p50_ms,
                    p.broker_confirm.p99_ms
                );
            }
        }
        if let Some(f) = self.fraction_of_bound() {
            println!("\nfraction of the bound     {f:.2}");
        }
        let c = &self.consistency;
        println!(
            "\nconsistency: {} confirmed, {} rejected, {} pending, {} dead letters, {} unpublished outbox rows",
            c.confirmed, c.rejected, c.pending, c.dead_letters, c.outbox_unpublished
        );
        if self.consistent {
            println!("RESULT: OK");
        } else {
            for problem in &c.problems {
                println!("  - {problem}");
            }
            println!("RESULT: FAILED (consistency broken)");
        }
    }
}

async fn measure_baselines(target: &Target, seconds: f64) -> anyhow::Result<Baselines> {
    let (publish, consume) = baselines::broker(
        &target.amqp_url,
        &format!("{}baseline", target.names.prefix),
        20_000,
        160,
        1000,
    )
    .await
    .context("broker baseline")?;
    let pool_size = shop_shared::service::ServiceConfig::from_env("order", 0, 0)?.pool_size;
    let pool = shop_shared::db::connect(&pool_url(&target.pools.order), pool_size).await?;
    let commits = baselines::postgres(&pool, pool_size as usize, seconds, 160)
        .await
        .context("postgres baseline")?;
    pool.close().await;
    let calls = baselines::grpc(64, 4, seconds)
        .await
        .context("gRPC baseline")?;
    Ok(Baselines {
        broker_publish_per_s: publish,
        broker_consume_per_s: consume,
        postgres_commits_per_s: commits,
        grpc_calls_per_s: calls,
    })
}

/// The URL behind a pool (the order database: a database of the same server).
fn pool_url(pool: &sqlx::PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("postgres")
    )
}

async fn channels(addr: std::net::SocketAddr) -> Vec<tonic::transport::Channel> {
    let mut out = Vec::new();
    for _ in 0..4 {
        match setup::channel(addr).await {
            Ok(channel) => out.push(channel),
            Err(e) => tracing::error!(error = %e, "cannot connect the load generator"),
        }
    }
    out
}

/// What every phase runs on: the system, the observer of terminal states, the load
/// generator's runtime.
struct Rig<'a> {
    target: &'a Target,
    observer: &'a Observer,
    load_runtime: &'a tokio::runtime::Runtime,
}

/// Runs one phase on the load generator's runtime and measures it.
async fn phase<F, Fut>(
    rig: &Rig<'_>,
    hops: Option<&HopRecorder>,
    label: &str,
    total: usize,
    offered: f64,
    drive: F,
) -> anyhow::Result<(PhaseReport, Vec<String>)>
where
    F: FnOnce(indicatif::ProgressBar) -> Fut,
    Fut: std::future::Future<Output = PhaseOutcome> + Send + 'static,
{
    let Rig {
        target,
        observer,
        load_runtime,
    } = *rig;
    let db_start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&target.pools.order)
        .await?;
    let terminal_before = observer.count();
    let (cpu_before, _) = cpu::cpu_seconds();
    let switches_before = cpu::context_switches();
    if let Some(hops) = hops {
        hops.start();
    }
    let bar = load::progress(label, total as u64);
    let ticker = {
        let (bar, observer) = (bar.clone(), observer.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = observer.count() - terminal_before;
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{done} terminal  {rate:.0} orders/s"));
            }
        })
    };
    let outcome = load_runtime.spawn(drive(bar.clone())).await?;
    let threads = cpu::threads();
    // The observer's own connection is the benchmark's, not the services'.
    let amqp_connections = cpu::connections_to(amqp_port(&target.amqp_url)).saturating_sub(1);

    // Wait for every accepted order's terminal event (or the deadline).
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline
        && outcome
            .placed
            .iter()
            .any(|(id, _)| observer.terminal(id).is_none())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ticker.abort();
    bar.finish_and_clear();
    let (cpu_after, _) = cpu::cpu_seconds();
    let switches = cpu::context_switches().saturating_sub(switches_before);
    let (hop_figures, broker_confirm, hop_sagas) = match hops {
        Some(hops) => {
            hops.stop();
            hops.hops()
        }
        None => (Vec::new(), Percentiles::default(), 0),
    };

    let mut e2e = Samples::default();
    let mut last = outcome.calls_done;
    let mut unfinished = 0;
    for (id, start) in &outcome.placed {
        match observer.terminal(id) {
            Some((at, _)) => {
                e2e.record(at.saturating_duration_since(*start));
                last = last.max(at);
            }
            None => unfinished += 1,
        }
    }
    let seconds = last.duration_since(outcome.started).as_secs_f64().max(1e-6);
    let call_seconds = outcome
        .calls_done
        .duration_since(outcome.started)
        .as_secs_f64()
        .max(1e-6);

    let mut events = 0_i64;
    let mut unpublished = 0_i64;
    let mut oldest_ms = 0.0_f64;
    for pool in target.pools.all() {
        let (published, pending, age): (i64, i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NOT NULL AND created_at >= $1), \
                    count(*) FILTER (WHERE published_at IS NULL), \
                    (EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE published_at IS NULL)) * 1000)::float8 \
             FROM outbox",
        )
        .bind(db_start)
        .fetch_one(pool)
        .await?;
        events += published;
        unpublished += pending;
        oldest_ms = oldest_ms.max(age.unwrap_or(0.0));
    }
    let placed = outcome.placed.len();
    let report = PhaseReport {
        orders: placed,
        failures: outcome.failures,
        offered_per_s: offered,
        concurrency: 0,
        seconds,
        calls_per_s: placed as f64 / call_seconds,
        orders_per_s: (placed - unfinished) as f64 / seconds,
        events_per_s: events as f64 / seconds,
        create_order: outcome.call_latency.percentiles(),
        end_to_end: e2e.percentiles(),
        unfinished,
        cpu_s_per_order: if placed > 0 {
            (cpu_after - cpu_before) / placed as f64
        } else {
            0.0
        },
        outbox_unpublished_at_end: unpublished,
        outbox_lag_ms: oldest_ms,
        hops: hop_figures,
        broker_confirm,
        hop_sagas,
        threads,
        amqp_connections,
        context_switches_per_order: if placed > 0 {
            switches as f64 / placed as f64
        } else {
            0.0
        },
    };
    eprintln!(
        "{label}: {placed} orders, {:.0} orders/s, CreateOrder p99 {:.1} ms, end-to-end p99 {:.1} ms",
        report.orders_per_s, report.create_order.p99_ms, report.end_to_end.p99_ms
    );
    Ok((
        report,
        outcome.placed.into_iter().map(|(id, _)| id).collect(),
    ))
}

/// Waits (up to three minutes) until the consuming services' queues are empty.
async fn drain_queues(target: &Target) -> anyhow::Result<()> {
    use lapin::options::QueueDeclareOptions;
    let conn = shop_shared::messaging::connection::connect(
        &target.amqp_url,
        &target.names.connection_name("bench", "drain"),
    )
    .await?;
    let channel = conn.create_channel().await?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut said = false;
    loop {
        let mut waiting = 0;
        for service in ["order", "inventory", "notification"] {
            let queue = channel
                .queue_declare(
                    &target.names.queue(service),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await?;
            waiting += queue.message_count();
        }
        if waiting == 0 || Instant::now() > deadline {
            break;
        }
        if !said {
            eprintln!("waiting for the services' queues to drain ({waiting} messages) …");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = conn.close(200, "drained").await;
    Ok(())
}

/// The broker's port in `url` (5672 when it names none).
fn amqp_port(url: &str) -> u16 {
    url.parse::<lapin::uri::AMQPUri>()
        .map_or(5672, |uri| uri.authority.port)
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
