//! A round claimed and published, its outcome not recorded yet: what became of each row, and
//! the record of it (published, failed through its own fault, or held for the broker's) in the
//! round's transaction, which holds the claimed rows until then.

use std::time::Instant;

use lapin::Channel;

use super::publish::Sent;
use super::relay::{ClaimedRow, Relay, RoundOutcome};

#[derive(Default)]
pub(super) struct Round {
    pub(super) tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    pub(super) started: Option<Instant>,
    pub(super) claimed: usize,
    pub(super) published: Vec<i64>,
    pub(super) published_keys: Vec<String>,
    /// Published rows the broker returned as unroutable: (routing key, message id).
    pub(super) returned: Vec<(String, String)>,
    /// Rows that failed through their own fault.
    pub(super) failed: Vec<(i64, String)>,
    /// Rows the broker did not take: published again later, attempts unchanged.
    pub(super) held: Vec<i64>,
    pub(super) held_error: Option<String>,
    /// Why the channel cannot be used any more.
    pub(super) broken: Option<String>,
}

impl Round {
    /// Records how the broker took `row`.
    pub(super) fn record(&mut self, row: &ClaimedRow, sent: Sent, channel: &Channel) {
        let channel_lost = !channel.status().connected();
        match sent {
            Sent::Confirmed { returned } => {
                self.published.push(row.id);
                self.published_keys.push(row.routing_key.clone());
                if returned {
                    self.returned
                        .push((row.routing_key.clone(), row.message_id.to_string()));
                }
                return;
            }
            Sent::RowFault(e) => self.failed.push((row.id, e)),
            Sent::BrokerFault(e) => {
                self.held.push(row.id);
                self.held_error.get_or_insert(e);
            }
            Sent::TimedOut(timeout) => {
                let e = format!(
                    "no confirm from the broker within {timeout:?} (OUTBOX_CONFIRM_TIMEOUT_MS)"
                );
                self.held.push(row.id);
                self.held_error.get_or_insert(e.clone());
                self.broken.get_or_insert(e);
            }
        }
        if channel_lost && self.broken.is_none() {
            self.broken = self
                .held_error
                .clone()
                .or_else(|| self.failed.last().map(|(_, e)| e.clone()));
        }
    }

    /// The second half of a round: marks the confirmed rows published and the failed ones
    /// failed, and commits.
    pub(super) async fn mark(self, relay: &Relay) -> anyhow::Result<RoundOutcome> {
        let Round {
            tx,
            started,
            claimed,
            published,
            published_keys,
            returned,
            failed,
            held,
            held_error,
            broken,
        } = self;
        let (Some(mut tx), Some(started)) = (tx, started) else {
            return Ok(RoundOutcome::default());
        };
        let published_keys: Vec<&str> = published_keys.iter().map(String::as_str).collect();
        if !published.is_empty() {
            // Not a persistent prepared statement: a cached generic plan for `id = ANY($1)`
            // is made while the outbox is young and unanalyzed, and it seq-scans the table
            // (every published row) on every round until autovacuum's first ANALYZE, a minute
            // or more later. Planned with the real ids, it is an index scan on the primary key.
            sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
                .bind(&published)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        for (id, error) in &failed {
            // Each failure doubles the wait (1 s, 2 s, … up to 60 s); past max_attempts the row
            // is parked as dead for an operator, and the rows behind it flow on.
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
                   dead = attempts + 1 >= $3, \
                   next_attempt_at = now() + least(interval '60 seconds', \
                                                   interval '1 second' * power(2, attempts)) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(relay.config.max_attempts)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(outbox_id = id, error = %error, "outbox row failed to publish");
        }
        if let (false, Some(error)) = (held.is_empty(), &held_error) {
            // Not the rows' fault: their attempts stay as they are, they are tried again after a
            // second (on a new channel when this one is lost), and they are never parked for it.
            sqlx::query(
                "UPDATE outbox SET last_error = $2, next_attempt_at = now() + interval '1 second' \
                 WHERE id = ANY($1)",
            )
            .bind(&held)
            .bind(error)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(rows = held.len(), error = %error, "the broker did not take outbox rows; publishing them again later");
        }
        tx.commit().await?;
        relay.count_round(
            started,
            &published_keys,
            &returned,
            failed.len() + held.len(),
        );

        if let Some(e) = broken {
            anyhow::bail!("broker channel failed while publishing: {e}");
        }
        Ok(RoundOutcome {
            claimed,
            published: published.len(),
            failed: failed.len(),
            held: held.len(),
        })
    }
}
