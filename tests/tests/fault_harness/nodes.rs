//! The three-node RabbitMQ cluster of `tests/cluster/rabbitmq-cluster.sh`, driven by
//! `rabbitmqctl -n <node>`: who leads a queue, stopping, killing and restarting a node.

use std::process::Command;
use std::time::{Duration, Instant};

/// The cluster's nodes.
pub(crate) const NODES: [&str; 3] = [
    "shop-c1@localhost",
    "shop-c2@localhost",
    "shop-c3@localhost",
];

/// The cluster script.
pub(crate) fn script() -> String {
    format!("{}/cluster/rabbitmq-cluster.sh", env!("CARGO_MANIFEST_DIR"))
}

/// Starts the cluster (or the nodes of it that are down) and returns its `AMQP_URL`.
pub(crate) fn start_cluster() -> String {
    let out = Command::new(script())
        .arg("start")
        .output()
        .expect("run the cluster script");
    assert!(
        out.status.success(),
        "the cluster did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("AMQP_URL="))
        .expect("the script prints AMQP_URL=")
        .to_owned()
}

/// `rabbitmqctl -q -n <node> <args>`; its output. Panics when it fails.
pub(crate) fn ctl(node: &str, args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl -n {node} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node that leads quorum queue `queue`, asked of the first node that answers.
pub(crate) fn leader_of(queue: &str) -> String {
    for node in NODES {
        let Ok(out) = Command::new("rabbitmqctl")
            .args([
                "-q",
                "-n",
                node,
                "list_queues",
                "name",
                "leader",
                "--formatter",
                "json",
            ])
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(leader) = rows
            .iter()
            .find(|r| r["name"] == queue)
            .and_then(|r| r["leader"].as_str())
        {
            return leader.to_owned();
        }
    }
    panic!("no node knows the leader of {queue}")
}

/// SIGKILLs `node`'s Erlang VM.
pub(crate) fn kill(node: &str) {
    let pid = ctl(node, &["eval", "os:getpid()."]);
    let pid = pid.trim().trim_matches('"');
    let status = Command::new("kill")
        .args(["-9", pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid} ({node})");
}

/// Waits until all three nodes run in one cluster again, then says who leads `queue` now
/// (`leader_before=… leader_after=…`, for the report line).
pub(crate) async fn after(queue: &str, before: &str) -> String {
    let start = Instant::now();
    loop {
        let running = Command::new("rabbitmqctl")
            .args([
                "-q",
                "-n",
                NODES[0],
                "cluster_status",
                "--formatter",
                "json",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|status| status["running_nodes"].as_array().map(Vec::len))
            .unwrap_or(0);
        if running == NODES.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the node did not rejoin the cluster"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    format!("leader_before={before} leader_after={}", leader_of(queue))
}
