//! Running the phases in order against a fresh (or the given) system: the baselines, the
//! closed-loop maximum, the fixed rate, the idle and CPU figures, the consistency check; each
//! phase's figures gathered into a [`Report`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::baselines::{self, Baselines};
use super::consistency::{self};
use super::cpu;
use super::hops::{HopFigures, HopRecorder};
use super::idle;
use super::load::{self, Observer, PhaseOutcome};
use super::setup::{self, Target};
use super::stats::Samples;
use super::{BenchArgs, Plan};

use super::report::{PhaseReport, Report};

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
        if args.idle_seconds > 0.0 {
            eprintln!("idle phase ({} s, no traffic) …", args.idle_seconds);
        }
        let quiet = idle::measure(target, args.idle_seconds).await;
        Ok(Self {
            quiet,
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
    let figures = match hops {
        Some(hops) => {
            hops.stop();
            hops.hops()
        }
        None => HopFigures::default(),
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
        hops: figures.hops,
        relay_confirms: figures.relay_confirms,
        broker_confirm: figures.broker_confirm,
        hop_sagas: figures.sagas,
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
