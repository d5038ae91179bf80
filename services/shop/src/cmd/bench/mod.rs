//! `shop bench`: the whole system under load with every safety on (publisher confirms,
//! persistent messages on quorum queues, outbox, inbox, tracing), its limits measured in the
//! same run, and a consistency check afterwards. A run that breaks consistency is FAILED,
//! whatever its speed.
//!
//! # Layout
//! - [`setup`] — the system under test (in-process, fresh databases, own broker prefix) and
//!   the seed data (users, products).
//! - [`load`] — closed-loop (max throughput) and open-loop (fixed rate) CreateOrder drivers,
//!   and the observer of terminal events.
//! - [`baselines`] — raw broker, database and gRPC throughput, and the bound they imply.
//! - [`consistency`] — the invariants checked after the run.
//! - `run` — the phases run in order, their figures gathered.
//! - [`report`] — the figures: the table and the JSON object.
//! - [`hops`] — where an order's time goes, from its spans.
//! - [`stats`], [`cpu`] — percentiles, per-thread CPU time, threads and context switches.

pub mod baselines;
pub mod consistency;
pub mod cpu;
pub mod hops;
pub mod idle;
pub mod load;
pub mod report;
mod run;
pub mod setup;
pub mod stats;

use std::time::Duration;

/// `shop bench` options.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Phases: with no phase flag, all three run (baselines; 20,000 orders from \
128 callers; 500 orders/s for 30 s). Any phase flag runs only the phases it names, the other \
flag of that phase taking its default: `--rate 100` alone offers 100 orders/s for 30 s."
)]
pub struct BenchArgs {
    /// Drive running services instead of starting them in-process: the host of the four
    /// gRPC ports (50051–50054); the databases and broker prefix come from the environment
    /// [default: start the four services in this process, on their own databases]
    #[arg(long)]
    pub target: Option<String>,
    /// Closed loop: concurrent CreateOrder callers [default: 128, when the phase runs]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Closed loop: orders to place [default: 20000, when the phase runs]
    #[arg(long)]
    pub orders: Option<usize>,
    /// Open loop: orders per second offered, on a fixed schedule [default: 500, when the
    /// phase runs]
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: seconds to offer load for [default: 30, when the phase runs]
    #[arg(long)]
    pub duration: Option<f64>,
    /// Measure the broker, database and gRPC baselines before the load [default: only when no
    /// phase flag is given]
    #[arg(long)]
    pub baselines: bool,
    /// Seconds each database and gRPC baseline runs.
    #[arg(long, default_value_t = 3.0)]
    pub baseline_seconds: f64,
    /// Users to seed (orders are spread over them).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Products to seed (each order has 1 to 3 of them). `--products 1`: every order on one
    /// hot product, the saga under contention.
    #[arg(long, default_value_t = 200)]
    pub products: usize,
    /// Lines per order (distinct products) [default: 1 to 3]
    #[arg(long)]
    pub lines: Option<usize>,
    /// Seconds of the idle phase at the end: the services' CPU with no traffic at all
    /// (`idle_cpu_fraction`); 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    pub idle_seconds: f64,
    /// Print one JSON object (on stdout) instead of the table [default: the table]
    #[arg(long)]
    pub json: bool,
}

/// Defaults of the phases when no phase flag is given.
pub const DEFAULT_ORDERS: usize = 20_000;
/// See [`DEFAULT_ORDERS`].
pub const DEFAULT_CONCURRENCY: usize = 128;
/// See [`DEFAULT_ORDERS`].
pub const DEFAULT_RATE: f64 = 500.0;
/// See [`DEFAULT_ORDERS`].
pub const DEFAULT_DURATION: f64 = 30.0;

/// Which phases run: with no phase flag, all three (baselines, closed loop, open loop).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Measure baselines.
    pub baselines: bool,
    /// Closed loop: (orders, concurrency).
    pub closed: Option<(usize, usize)>,
    /// Open loop: (rate, duration).
    pub open: Option<(f64, Duration)>,
}

impl Plan {
    /// The phases `args` ask for.
    pub fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let any = args.baselines
            || args.concurrency.is_some()
            || args.orders.is_some()
            || args.rate.is_some()
            || args.duration.is_some();
        let closed = (!any || args.orders.is_some() || args.concurrency.is_some()).then(|| {
            (
                args.orders.unwrap_or(DEFAULT_ORDERS),
                args.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            )
        });
        let open = (!any || args.rate.is_some() || args.duration.is_some()).then(|| {
            (
                args.rate.unwrap_or(DEFAULT_RATE),
                Duration::from_secs_f64(args.duration.unwrap_or(DEFAULT_DURATION)),
            )
        });
        if let Some((orders, concurrency)) = closed {
            anyhow::ensure!(orders > 0, "--orders must be at least 1");
            anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
        }
        if let Some((rate, duration)) = open {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite(),
                "--rate must be a positive number"
            );
            anyhow::ensure!(!duration.is_zero(), "--duration must be positive");
        }
        anyhow::ensure!(args.users > 0, "--users must be at least 1");
        anyhow::ensure!(args.products > 0, "--products must be at least 1");
        anyhow::ensure!(
            args.lines.is_none_or(|l| (1..=100).contains(&l)),
            "--lines must be between 1 and 100"
        );
        Ok(Self {
            baselines: !any || args.baselines,
            closed,
            open,
        })
    }
}

/// Runs the benchmark; returns whether the run was consistent. `hops` must be a span
/// processor of the process's tracer provider for the per-hop figures.
pub async fn run(args: BenchArgs, hops: hops::HopRecorder) -> anyhow::Result<bool> {
    let plan = Plan::from_args(&args)?;
    let report = report::Report::run(&args, &plan, &hops).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print_table();
    }
    Ok(report.consistent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan(argv: &[&str]) -> Plan {
        let cli = Cli::parse_from(std::iter::once("bench").chain(argv.iter().copied()));
        Plan::from_args(&cli.bench).unwrap()
    }

    #[test]
    fn no_flag_runs_every_phase_with_the_defaults() {
        let p = plan(&["--json"]);
        assert!(p.baselines);
        assert_eq!(p.closed, Some((20_000, DEFAULT_CONCURRENCY)));
        assert_eq!(p.open, Some((500.0, Duration::from_secs(30))));
    }

    #[test]
    fn the_help_shows_the_defaults_the_plan_uses() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        for default in [
            format!("[default: {DEFAULT_CONCURRENCY},"),
            format!("[default: {DEFAULT_ORDERS},"),
            format!("[default: {DEFAULT_RATE},"),
            format!("[default: {DEFAULT_DURATION},"),
        ] {
            assert!(help.contains(&default), "{default} missing from:\n{help}");
        }
    }

    #[test]
    fn phase_flags_select_phases() {
        let p = plan(&["--orders", "300"]);
        assert!(!p.baselines);
        assert_eq!(p.closed, Some((300, DEFAULT_CONCURRENCY)));
        assert_eq!(p.open, None);
        let p = plan(&["--rate", "100", "--duration", "2"]);
        assert_eq!(p.closed, None);
        assert_eq!(p.open, Some((100.0, Duration::from_secs(2))));
    }
}
