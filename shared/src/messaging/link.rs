//! One broker connection shared by the messaging sessions of a process.
//!
//! lapin gives every connection an I/O thread of its own, and every delivery and every
//! confirm crosses from that thread to a tokio worker; channels, on the other hand, are cheap
//! and multiplexed on their connection. So a process holds two connections, one for
//! publishing and one for consuming, and every relay and consumer session (of every service
//! the process runs) takes its channels from them. Publishing stays apart from consuming
//! because RabbitMQ blocks a publishing connection under a resource alarm: a blocked relay
//! must never stop the consumers that drain the queues.
//!
//! Recovery is unchanged in spirit: a session works on its channels until one fails, closes
//! them and returns; the supervise loop ([`super::connection::supervise`]) waits and starts it
//! again, and the new session asks the link for channels. The link opens a new connection
//! when the one it holds is gone (closed by the broker, a missed heartbeat, a restart), once
//! for all the sessions that ask at the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lapin::{Channel, Connection};
use tokio::sync::Mutex;

use super::connection;

/// A shared broker connection that reconnects on demand. Clones share the connection.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    /// One URL, or a cluster's nodes separated by commas.
    url: String,
    name: String,
    state: Mutex<State>,
    generations: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The open connection and its generation (1 for the first, then one more per reconnect).
    current: Option<(u64, Connection)>,
    /// The node (index in the URL list) the last connection went to.
    node: usize,
    /// Whether a connection was lost since the last one opened: the next tries the node after.
    lost: bool,
    /// Set by [`Link::close`]: no connection is opened after it.
    closed: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.inner.name)
            .field(
                "generation",
                &self.inner.generations.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// A channel taken from a [`Link`], with the generation of the connection it lives on (a
/// session that sees a generation it has not seen before counts a connection opened).
#[derive(Debug)]
pub struct Leased {
    /// The new channel.
    pub channel: Channel,
    /// Which of the link's connections carries it.
    pub generation: u64,
}

impl Link {
    /// A link to the broker at `url` (one URL, or a cluster's nodes separated by commas: each
    /// connection goes to the first that accepts) whose connections are named `name` (visible in
    /// `rabbitmqctl list_connections`). Nothing is opened until the first channel is asked for.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                url: url.into(),
                name: name.into(),
                state: Mutex::new(State::default()),
                generations: AtomicU64::new(0),
            }),
        }
    }

    /// The broker URL (one, or a cluster's nodes separated by commas).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The connections' name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A new channel on the link's connection, opening a connection first when there is none
    /// or the one held has failed.
    pub async fn channel(&self) -> Result<Leased, lapin::Error> {
        let mut state = self.inner.state.lock().await;
        if state.closed {
            return Err(lapin::Error::InvalidConnectionState(
                lapin::ConnectionState::Closed,
            ));
        }
        if let Some((generation, conn)) = &state.current
            && conn.status().connected()
        {
            match conn.create_channel().await {
                Ok(channel) => {
                    return Ok(Leased {
                        channel,
                        generation: *generation,
                    });
                }
                // The connection went while the channel was being opened: reconnect below.
                Err(_) if !conn.status().connected() => {}
                Err(e) => return Err(e),
            }
        }
        // The connection held (if any) is gone: a new one, first to the node after the one
        // that was lost (with several nodes). The lock is held meanwhile, so the sessions
        // asking at the same time share it.
        if state.current.take().is_some() {
            state.lost = true;
        }
        let start = state.node + usize::from(state.lost);
        let (conn, node) =
            connection::connect_from(&self.inner.url, start, &self.inner.name).await?;
        (state.node, state.lost) = (node, false);
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let channel = conn.create_channel().await?;
        state.current = Some((generation, conn));
        Ok(Leased {
            channel,
            generation,
        })
    }

    /// Whether the link holds an open connection now. A reconnect in progress holds the
    /// link's lock: after `wait` without it, the answer is no.
    pub async fn connected(&self, wait: std::time::Duration) -> bool {
        match tokio::time::timeout(wait, self.inner.state.lock()).await {
            Ok(state) => state
                .current
                .as_ref()
                .is_some_and(|(_, conn)| conn.status().connected()),
            Err(_) => false,
        }
    }

    /// Closes the connection (its channels with it) and opens none after this. Call once every
    /// session using the link has stopped.
    pub async fn close(&self, reason: &str) {
        let mut state = self.inner.state.lock().await;
        state.closed = true;
        if let Some((_, conn)) = state.current.take()
            && conn.status().connected()
        {
            let _ = conn.close(200, reason).await;
        }
    }
}

/// The two links of a process: one for publishing (the relays, and the retry and dead-letter
/// copies a consumer sends are on its own consuming channels), one for consuming.
#[derive(Debug, Clone)]
pub struct Links {
    /// For the outbox relays.
    pub publish: Link,
    /// For the consumers.
    pub consume: Link,
}

impl Links {
    /// Two links to `url`, their connections named `<owner>-publish` and `<owner>-consume`
    /// under the names' prefix.
    pub fn new(url: &str, names: &super::Names, owner: &str) -> Self {
        Self {
            publish: Link::new(url, names.connection_name(owner, "publish")),
            consume: Link::new(url, names.connection_name(owner, "consume")),
        }
    }

    /// Closes both connections.
    pub async fn close(&self, reason: &str) {
        self.publish.close(reason).await;
        self.consume.close(reason).await;
    }
}

/// Counts a connection opened in `metrics` when `leased` lives on a connection the session
/// has not used before (`seen` remembers the last generation across its sessions).
pub fn note_generation(seen: &AtomicU64, leased: &Leased, metrics: &crate::metrics::Metrics) {
    if seen.swap(leased.generation, Ordering::Relaxed) != leased.generation {
        metrics.connection_opened();
    }
}
