//! The fast path from commit to publish: the events a transaction of this process staged are
//! handed over after its commit ([`OutboxWaker::committed`](super::OutboxWaker::committed)) and
//! published at once, without reading them back; their rows are marked published after the
//! broker's confirm: the confirms of up to 20 ms (`MARK_LINGER`) in one UPDATE.
//!
//! Nothing is weaker than the claiming path: the rows are in the table before anything is
//! handed over. A row the fast path does not get confirmed (the process died, the broker did
//! not take it, the hand-off queue was full) stays unpublished, and the claiming relay takes
//! it: at once after a restart, else once it is older than the grace period
//! (`OUTBOX_CONFIRM_TIMEOUT_MS`: longer than any fast publish may take). A row both paths
//! publish is a duplicate the consumers' inbox absorbs; the fast path's mark sees it (the
//! row was published already) and counts it in `shop_outbox_published_twice_total`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use lapin::Channel;

use crate::messaging::envelope::MessageId;

use super::publish::Sent;
use super::relay::Relay;

/// A row to mark: its message id and routing key (unique together).
type RowKey = (MessageId, String);

/// How long confirmed rows wait for more before they are marked in one UPDATE. Nothing waits
/// for a mark (the event is out once confirmed), and at an everyday rate one UPDATE per
/// confirm is most of the relay's database work: each is a round trip and a commit of its own.
const MARK_LINGER: Duration = Duration::from_millis(20);

/// The most rows one UPDATE marks; more are marked at once, without the linger.
const MARK_BATCH: usize = 1_000;

/// A future of the fast path's own, boxed with its `Send` spelled out (the compiler cannot
/// prove it through the select loop otherwise).
type Step<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Relay {
    /// Publishes what is handed over until the session ends (an error: the channel broke).
    /// Sends each hand-off as soon as it comes, while earlier ones wait for their confirms;
    /// marks what was confirmed within [`MARK_LINGER`] in one UPDATE, while the next messages
    /// go out.
    pub(super) async fn fast_path(&self, channel: &Channel) -> anyhow::Result<()> {
        let mut in_flight: FuturesUnordered<Step<'_, (Vec<RowKey>, Vec<Sent>)>> =
            FuturesUnordered::new();
        let mut to_mark: Vec<RowKey> = Vec::new();
        // When the rows in `to_mark` are marked at the latest.
        let mut mark_due: Option<tokio::time::Instant> = None;
        let mut marking: Option<Step<'_, anyhow::Result<()>>> = None;
        loop {
            let due = mark_due.is_some_and(|due| due <= tokio::time::Instant::now());
            if marking.is_none() && (due || to_mark.len() >= MARK_BATCH) {
                let rows = std::mem::take(&mut to_mark);
                mark_due = None;
                marking = Some(Box::pin(self.mark_published(rows)));
            }
            let linger = mark_due.filter(|_| marking.is_none());
            tokio::select! {
                () = self.waker.handed() => {
                    let envelopes = self.waker.take();
                    if envelopes.is_empty() {
                        continue;
                    }
                    self.fast_pending.fetch_add(envelopes.len(), Ordering::AcqRel);
                    let keys: Vec<RowKey> = envelopes
                        .iter()
                        .map(|e| (e.message_id, e.routing_key.clone()))
                        .collect();
                    let sent = self.send(channel, envelopes).await;
                    in_flight.push(Box::pin(async move { (keys, self.confirmed(sent).await) }));
                }
                Some((keys, outcomes)) = in_flight.next(), if !in_flight.is_empty() => {
                    let confirmed = self.settle_fast(keys, outcomes)?;
                    if !confirmed.is_empty() && mark_due.is_none() {
                        mark_due = Some(tokio::time::Instant::now() + MARK_LINGER);
                    }
                    to_mark.extend(confirmed);
                }
                () = tokio::time::sleep_until(linger.unwrap_or_else(tokio::time::Instant::now)), if linger.is_some() => {}
                marked = async { marking.as_mut().expect("guarded").await }, if marking.is_some() => {
                    marking = None;
                    marked?;
                }
            }
        }
    }

    /// Books a hand-off's confirms: counts what was confirmed (and returned), and returns the
    /// rows to mark. Rows the broker did not take are left to the claiming relay; a failure
    /// that broke the channel ends the session.
    fn settle_fast(&self, keys: Vec<RowKey>, outcomes: Vec<Sent>) -> anyhow::Result<Vec<RowKey>> {
        let mut confirmed = Vec::with_capacity(keys.len());
        let mut returned = Vec::new();
        let mut failed = 0;
        let mut broken = None;
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Sent::Confirmed { returned: r } => {
                    if r {
                        returned.push((key.1.clone(), key.0.to_string()));
                    }
                    confirmed.push(key);
                }
                Sent::RowFault(e) | Sent::BrokerFault(e) => {
                    // The row waits in the table: the claiming relay publishes it (and counts
                    // a failure of its own against it).
                    tracing::debug!(message_id = %key.0, error = %e, "fast path: not published; left to the claiming relay");
                    failed += 1;
                    self.fast_pending.fetch_sub(1, Ordering::AcqRel);
                }
                Sent::TimedOut(timeout) => {
                    failed += 1;
                    self.fast_pending.fetch_sub(1, Ordering::AcqRel);
                    broken.get_or_insert(format!(
                        "no confirm from the broker within {timeout:?} (OUTBOX_CONFIRM_TIMEOUT_MS)"
                    ));
                }
            }
        }
        let keys: Vec<&str> = confirmed.iter().map(|(_, key)| key.as_str()).collect();
        self.count_sent(&keys, &returned, failed);
        if let Some(e) = broken {
            anyhow::bail!("broker channel failed while publishing: {e}");
        }
        Ok(confirmed)
    }

    /// Marks confirmed rows published, in one statement. A row already published was published
    /// by the claiming relay too (it took the row before this mark): counted as a duplicate.
    async fn mark_published(&self, rows: Vec<RowKey>) -> anyhow::Result<()> {
        let count = rows.len();
        let (ids, keys): (Vec<uuid::Uuid>, Vec<String>) = rows
            .into_iter()
            .map(|(id, key)| (id.as_uuid(), key))
            .unzip();
        let marked = sqlx::query(
            "UPDATE outbox AS o SET published_at = now() \
             FROM unnest($1::uuid[], $2::text[]) AS p(message_id, routing_key) \
             WHERE o.message_id = p.message_id AND o.routing_key = p.routing_key \
               AND o.published_at IS NULL",
        )
        .bind(&ids)
        .bind(&keys)
        .execute(&self.pool)
        .await;
        self.fast_pending.fetch_sub(count, Ordering::AcqRel);
        let marked = marked?.rows_affected() as usize;
        if marked < count {
            self.metrics.published_twice((count - marked) as u64);
        }
        Ok(())
    }

    /// Whether the fast path has nothing waiting and nothing unmarked.
    pub(super) fn fast_path_idle(&self) -> bool {
        self.waker.waiting() == 0 && self.fast_pending.load(Ordering::Acquire) == 0
    }
}
