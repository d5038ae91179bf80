//! Connections kept warm between a service's RPCs.
//!
//! sqlx pings every connection given back to its pool, from a task of its own, before another
//! caller may have it: for an RPC that runs one statement (CreateOrder) that is a second round
//! trip to the server and a task per call. An RPC takes its connection from here instead and
//! gives it back here when it finished normally; the next RPC takes the connection used last,
//! as it is, if it waited less than [`PING_IF_IDLE_FOR`]. A connection that waited longer, one
//! dropped on an error or a cancelled call, every connection past [`KEEP`], and any given back
//! while every connection of the pool is out (callers may be queued for one) go back to the
//! pool, which pings them as before. A sweeper gives back what waited longer than
//! [`PING_IF_IDLE_FOR`], so an idle service holds none; [`WarmConnections::close`] gives back
//! everything before the pool closes.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::Notify;

use super::PING_IF_IDLE_FOR;

/// The most connections waiting here at once; what a burst gives back beyond them goes back to
/// the pool, which the service's consumers and relay share.
pub const KEEP: usize = 4;

/// A service's RPC connections: [`acquire`](Self::acquire) one, and
/// [`give_back`](WarmConnection::give_back) it when the call finished normally.
#[derive(Debug, Clone)]
pub struct WarmConnections {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: PgPool,
    idle: Mutex<Idle>,
    /// Wakes the sweeper when a connection starts waiting, or when this goes.
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Idle {
    /// Connections given back, with when: the oldest first.
    waiting: Vec<(Instant, PoolConnection<Postgres>)>,
    /// The sweeper sleeps until a connection waits here.
    sweeper_parked: bool,
    /// Closed: nothing waits here any more.
    closed: bool,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Idle> {
        // Nothing panics while holding the lock; a poisoned one holds consistent data.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl WarmConnections {
    /// Keeps nothing yet; starts the sweeper (on the current tokio runtime).
    pub fn new(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            pool,
            idle: Mutex::new(Idle::default()),
            wake: wake.clone(),
        });
        tokio::spawn(sweep(Arc::downgrade(&shared), wake));
        Self { shared }
    }

    /// The connection given back last, if it waited less than [`PING_IF_IDLE_FOR`]; else one
    /// from the pool (which pings a connection idle for that long first).
    pub async fn acquire(&self) -> Result<WarmConnection, sqlx::Error> {
        let (fresh, stale) = {
            let mut idle = self.shared.idle();
            match idle.waiting.pop() {
                Some((at, conn)) if at.elapsed() < PING_IF_IDLE_FOR => (Some(conn), Vec::new()),
                // The newest waited too long, so did every other.
                Some(newest) => {
                    let mut stale = std::mem::take(&mut idle.waiting);
                    stale.push(newest);
                    (None, stale)
                }
                None => (None, Vec::new()),
            }
        };
        drop(stale);
        let conn = match fresh {
            Some(conn) => conn,
            None => self.shared.pool.acquire().await?,
        };
        Ok(WarmConnection {
            conn: Some(conn),
            home: self.shared.clone(),
        })
    }

    /// How many connections wait here now.
    pub fn waiting(&self) -> usize {
        self.shared.idle().waiting.len()
    }

    /// Gives every waiting connection back to the pool and keeps none from now on: call it
    /// before closing the pool, which waits for every connection.
    pub fn close(&self) {
        let waiting = {
            let mut idle = self.shared.idle();
            idle.closed = true;
            std::mem::take(&mut idle.waiting)
        };
        drop(waiting);
        self.shared.wake.notify_one();
    }
}

/// A connection taken from [`WarmConnections`]; dropped, it goes back to the pool.
#[derive(Debug)]
pub struct WarmConnection {
    conn: Option<PoolConnection<Postgres>>,
    home: Arc<Shared>,
}

impl WarmConnection {
    /// The call finished normally (its transaction committed or rolled back, every result
    /// read): the connection waits for the next call.
    pub fn give_back(mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // Every connection of the pool out: a call may be waiting in the pool's queue, which a
        // connection kept here would pass by (and the next caller would take it first).
        let pool = &self.home.pool;
        let saturated = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
        let mut idle = self.home.idle();
        if saturated || idle.closed || idle.waiting.len() >= KEEP {
            drop(idle);
            drop(conn);
            return;
        }
        idle.waiting.push((Instant::now(), conn));
        let wake = std::mem::take(&mut idle.sweeper_parked);
        drop(idle);
        if wake {
            self.home.wake.notify_one();
        }
    }
}

impl Deref for WarmConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        // Only `give_back` (which consumes self) takes the connection out.
        self.conn
            .as_ref()
            .expect("a warm connection is held until given back")
    }
}

impl DerefMut for WarmConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a warm connection is held until given back")
    }
}

/// Gives back to the pool every connection that waited longer than [`PING_IF_IDLE_FOR`]:
/// checks once per that period while connections wait, sleeps while none does, and ends when
/// the [`WarmConnections`] are gone.
async fn sweep(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let parked = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut idle = shared.idle();
            if idle.closed {
                return;
            }
            let cutoff = Instant::now().checked_sub(PING_IF_IDLE_FOR);
            let fresh_from = idle
                .waiting
                .iter()
                .position(|(at, _)| cutoff.is_none_or(|cutoff| *at > cutoff))
                .unwrap_or(idle.waiting.len());
            let stale: Vec<_> = idle.waiting.drain(..fresh_from).collect();
            idle.sweeper_parked = idle.waiting.is_empty();
            let parked = idle.sweeper_parked;
            drop(idle);
            drop(stale);
            parked
        };
        if parked {
            wake.notified().await;
        } else {
            tokio::time::sleep(PING_IF_IDLE_FOR).await;
        }
    }
}
