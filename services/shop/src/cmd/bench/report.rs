//! The figures of a run, reported: a table for people, one JSON object for comparing runs.

use serde_json::json;

use super::baselines::Baselines;
use super::consistency::Consistency;
use super::hops::{self};
use super::idle::Quiet;
use super::stats::Percentiles;

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
    /// The broker's confirm of each relay hop's own event ([`hops::RELAY_HOPS`]' order).
    pub relay_confirms: Vec<Percentiles>,
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
    /// The idle phase, and what the services counted over the run.
    pub quiet: Quiet,
}

impl Report {
    /// The saga's closed-loop throughput as a fraction of the baselines' bound.
    pub fn fraction_of_bound(&self) -> Option<f64> {
        let bound = self.baselines?.bound_orders_per_s();
        let achieved = self.closed.as_ref()?.orders_per_s;
        (bound > 0.0).then(|| achieved / bound)
    }

    /// The slowest relay hop's p50 (a commit until the broker confirmed the event) over the
    /// broker confirm's p50, in the fixed-rate phase: how much the relay adds to the confirm.
    pub fn relay_hop_vs_confirm_p50(&self) -> f64 {
        let Some(open) = &self.open else { return 0.0 };
        let confirm = open.broker_confirm.p50_ms;
        let relay_hops = hops::HOPS
            .iter()
            .zip(&open.hops)
            .filter(|((name, _), _)| hops::RELAY_HOPS.contains(name))
            .map(|(_, p)| p.p50_ms);
        match relay_hops.reduce(f64::max) {
            Some(slowest) if confirm > 0.0 => slowest / confirm,
            _ => 0.0,
        }
    }

    /// The fixed-rate phase's end-to-end p50 over the broker confirm's p50.
    pub fn e2e_p50_vs_confirm_p50(&self) -> f64 {
        match &self.open {
            Some(open) if open.broker_confirm.p50_ms > 0.0 => {
                open.end_to_end.p50_ms / open.broker_confirm.p50_ms
            }
            _ => 0.0,
        }
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
        for (name, p) in hops::RELAY_HOPS.iter().zip(&open.relay_confirms) {
            hop_figures.insert(format!("hop_{name}_broker_p50_ms"), json!(p.p50_ms));
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
            "relay_hop_vs_confirm_p50": self.relay_hop_vs_confirm_p50(),
            "e2e_p50_vs_confirm_p50": self.e2e_p50_vs_confirm_p50(),
            "idle_seconds": self.quiet.idle_seconds,
            "idle_cpu_fraction": self.quiet.idle_cpu_fraction,
            "events_published": self.quiet.events_published,
            "published_twice": self.quiet.published_twice,
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
                for (name, c) in hops::RELAY_HOPS.iter().zip(&p.relay_confirms) {
                    println!(
                        "    {:<56} p50 {:>6.1} ms  p99 {:>6.1} ms",
                        format!("(the broker's confirm in {name})"),
                        c.p50_ms,
                        c.p99_ms
                    );
                }
            }
        }
        if let Some(f) = self.fraction_of_bound() {
            println!("\nfraction of the bound     {f:.2}");
        }
        if self.open.is_some() {
            println!(
                "slowest relay hop / broker confirm (p50) {:.2}   end to end / broker confirm (p50) {:.1}",
                self.relay_hop_vs_confirm_p50(),
                self.e2e_p50_vs_confirm_p50()
            );
        }
        let q = &self.quiet;
        if q.idle_seconds > 0.0 {
            println!(
                "idle                      {:.2}% of one core over {:.0} s with no traffic",
                q.idle_cpu_fraction * 100.0,
                q.idle_seconds
            );
        }
        println!(
            "published by both relay paths {} of {} events (duplicates the inbox absorbed)",
            q.published_twice, q.events_published
        );
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
