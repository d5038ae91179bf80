//! Opening broker connections on the tokio runtime, and the backoff used to reconnect.
//!
//! Every long-running messaging task (the outbox relay, each consumer) runs inside a supervise
//! loop: take channels from the process's connection ([`super::link`], which reconnects when
//! the connection is gone), declare, work until a channel fails, close its channels, wait, and
//! start again. That is the whole recovery story, so it is written once, here, instead of
//! relying on lapin's built-in recovery.

use std::future::Future;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

pub use crate::diagnose::node_urls;

/// How long one node may take to accept a connection before the next one is tried (a node
/// cut off by the network never answers at all).
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection named `name` (visible in `rabbitmqctl list_connections`) to the first
/// node of `url` (one URL or a comma-separated list) that accepts one.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    connect_from(url, 0, name).await.map(|(conn, _)| conn)
}

/// Like [`connect`], trying the nodes in turn from the one at `start` (wrapping around), so
/// a reconnect after losing a node tries the others first. Returns the connection and the
/// index of the node that accepted it; the error of the last node tried when none did.
pub async fn connect_from(
    url: &str,
    start: usize,
    name: &str,
) -> Result<(Connection, usize), lapin::Error> {
    let nodes = node_urls(url);
    let mut last_error = None;
    for attempt in 0..nodes.len() {
        let index = (start + attempt) % nodes.len();
        let node = nodes[index];
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(name.to_owned().into());
        match tokio::time::timeout(NODE_CONNECT_TIMEOUT, Connection::connect(node, properties))
            .await
        {
            Ok(Ok(conn)) => return Ok((conn, index)),
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => {
                last_error = Some(lapin::Error::IOError(std::sync::Arc::new(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {NODE_CONNECT_TIMEOUT:?}"),
                    ),
                )))
            }
        }
        if nodes.len() > 1 {
            tracing::warn!(
                node = %crate::diagnose::redact(node),
                error = %last_error.as_ref().map(ToString::to_string).unwrap_or_default(),
                "broker node refused or unreachable, trying the next"
            );
        }
    }
    Err(last_error.unwrap_or(lapin::Error::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    )))
}

/// Exponential backoff with an upper bound, reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next wait, doubling the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to the initial wait.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s: quick after a blip, gentle on a broker that is down.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// How long a session may take to wind down after `shutdown` (finish its batch or round,
/// close its channels) before it is abandoned.
pub const SESSION_GRACE: Duration = Duration::from_secs(10);

/// Runs `session` again and again until `shutdown`: each run gets a fresh attempt and should
/// return when its channels fail. Returns when `shutdown` is cancelled and the session in
/// progress has wound down: a session watches `shutdown` itself, finishes its work and closes
/// its channels, so it is never dropped half way (a dropped consuming channel would keep its
/// prefetched deliveries). Only a session that does not
/// return within [`SESSION_GRACE`] of the signal is abandoned, with a warning.
///
/// A session returns `Ok(true)` when it did useful work before failing (the backoff resets)
/// and `Ok(false)` or `Err` when it failed early.
pub async fn supervise<F, Fut>(what: &str, shutdown: CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let run = session();
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = shutdown.cancelled() => {
                match tokio::time::timeout(SESSION_GRACE, run).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(error = %format!("{error:#}"), "{what}: failed while stopping");
                    }
                    Err(_) => {
                        tracing::warn!("{what}: did not stop within {SESSION_GRACE:?} of the signal");
                    }
                }
                break;
            }
        };
        match outcome {
            Ok(true) => backoff.reset(),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "{what}: session failed, reconnecting");
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amqp_url_may_list_several_nodes() {
        assert_eq!(node_urls("amqp://a:5672/%2f"), ["amqp://a:5672/%2f"]);
        assert_eq!(
            node_urls(" amqp://a:5672/%2f, amqp://b:5673/%2f ,"),
            ["amqp://a:5672/%2f", "amqp://b:5673/%2f"]
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
