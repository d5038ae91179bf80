//! Applying a batch in the database: decode each delivery (what cannot be decoded is
//! dead-lettered), drop repeats within the batch, record the inbox rows, load the batch state,
//! run the handlers and store the state in one transaction — or, when a handler fails, one
//! transaction per message so only the failing ones are diverted.

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use lapin::BasicProperties;

use crate::db::KeptConnection;
use crate::messaging::envelope::{self, DecodeError, Envelope, IncomingMeta};
use crate::messaging::outbox;
use crate::metrics::Outcome;
use crate::telemetry::propagation::{TraceFields, continue_trace};
use tracing::Instrument as _;

use super::divert::{Divert, Diverted};
use super::session::Inner;
use super::subscriptions::{ErasedHandler, Parts};
use super::{BatchView, HandlerError};

/// A decoded delivery waiting to be applied.
pub(super) struct Prepared {
    pub(super) meta: IncomingMeta,
    pub(super) event: Box<dyn Any + Send + Sync>,
    pub(super) handler: Arc<dyn ErasedHandler>,
    pub(super) properties: BasicProperties,
    pub(super) body: Vec<u8>,
    /// The consumer span: opened when the batch is taken up, ended when the transaction that
    /// applied the message committed (see [`Inner::apply`]), so it shows what the message cost
    /// this service, not only its handler.
    pub(super) span: tracing::Span,
}

/// A message as it arrived: what the broker delivered, or what a test hands the consumer.
pub(super) struct Arrival {
    pub(super) properties: BasicProperties,
    pub(super) body: Vec<u8>,
    pub(super) routing_key: String,
}

/// What applying a batch made of each of its messages, before the broker hears of it.
pub(super) struct Settlement {
    /// (routing key, outcome) of every message settled without a copy sent anywhere.
    pub(super) settled: Vec<(String, Outcome)>,
    /// The messages to send to a retry queue or the DLQ.
    pub(super) diverted: Vec<Diverted>,
}

/// Which of a group's messages a committed transaction applied (the others were duplicates).
pub(super) type Applied = HashSet<String>;

impl Inner {
    /// Applies a batch in the database: decodes each arrival (what cannot be decoded is
    /// dead-lettered), drops repeats within the batch, applies the rest in one transaction or,
    /// when a handler fails, one per transaction. Returns what became of each; the diverted
    /// copies are not sent yet.
    pub(super) async fn settle(
        &self,
        db: &mut KeptConnection,
        batch: Vec<Arrival>,
        crash_after: Option<usize>,
    ) -> anyhow::Result<Settlement> {
        let mut ready = Vec::with_capacity(batch.len());
        let mut diverted: Vec<Diverted> = Vec::new();
        // (routing key, outcome) of every delivery settled without a copy sent anywhere.
        let mut settled: Vec<(String, Outcome)> = Vec::with_capacity(batch.len());
        let mut seen = HashSet::with_capacity(batch.len());
        for arrival in batch {
            match self.prepare(&arrival) {
                Ok(prepared) => {
                    // The same message twice in one batch: the first one counts.
                    if seen.insert(prepared.meta.message_id.clone()) {
                        ready.push(prepared);
                    } else {
                        settled.push((prepared.meta.routing_key, Outcome::Duplicate));
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, routing_key = %arrival.routing_key, "undecodable message dead-lettered");
                    let retry_count = arrival
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| envelope::header_u32(h, envelope::RETRY_COUNT))
                        .unwrap_or(0);
                    diverted.push(Diverted {
                        properties: arrival.properties,
                        body: arrival.body,
                        routing_key: arrival.routing_key,
                        retry_count,
                        divert: Divert::DeadLetter(error.to_string()),
                    });
                }
            }
        }

        let queue = self.names.queue(&self.service);
        let mut record_applied = |group: &[Prepared], applied: &Applied| {
            let now = chrono::Utc::now();
            for prepared in group {
                let outcome = if applied.contains(&prepared.meta.message_id) {
                    // How far behind the consumer is: from the staging of the event to now.
                    if let Some(staged_at) = prepared.meta.staged_at {
                        let lag = (now - staged_at).to_std().unwrap_or_default();
                        let label = self.subscriptions.metric_key(&prepared.meta.routing_key);
                        self.metrics.consumer_lag(&queue, label, lag);
                    }
                    Outcome::Applied
                } else {
                    Outcome::Duplicate
                };
                settled.push((prepared.meta.routing_key.clone(), outcome));
            }
        };
        if !ready.is_empty() {
            match self.apply(db, &ready, crash_after).await? {
                Ok(applied) => record_applied(&ready, &applied),
                Err(_) if ready.len() > 1 => {
                    // Something in the batch failed: apply each message on its own so only the
                    // failing ones are diverted.
                    for prepared in &ready {
                        match self.apply(db, std::slice::from_ref(prepared), None).await? {
                            Ok(applied) => record_applied(std::slice::from_ref(prepared), &applied),
                            Err(error) => diverted.push(self.divert(prepared, error)),
                        }
                    }
                }
                Err(error) => diverted.push(self.divert(&ready[0], error)),
            }
        }
        Ok(Settlement { settled, diverted })
    }

    pub(super) fn prepare(&self, arrival: &Arrival) -> Result<Prepared, DecodeError> {
        let meta = IncomingMeta::read(&arrival.properties, arrival.routing_key.as_str())?;
        let (_, handler) = self
            .subscriptions
            .handlers
            .get(meta.message_type.as_str())
            .ok_or_else(|| DecodeError::UnknownType(meta.message_type.clone()))?;
        let event = handler.decode(&arrival.body)?;
        Ok(Prepared {
            span: self.consumer_span(&meta),
            meta,
            event,
            handler: handler.clone(),
            properties: arrival.properties.clone(),
            body: arrival.body.clone(),
        })
    }

    /// Applies `group` in one transaction on `db` and returns the ids it applied (the others were
    /// in the inbox already). The outer `Result` is an infrastructure failure (the session
    /// ends, nothing is acknowledged); the inner one is a handler's.
    ///
    /// `crash_after` (tests only, see [`Consumer::apply_for_test`]) rolls the transaction back
    /// after that many handlers and fails as a crash would.
    pub(super) async fn apply(
        &self,
        db: &mut KeptConnection,
        group: &[Prepared],
        crash_after: Option<usize>,
    ) -> anyhow::Result<Result<Applied, HandlerError>> {
        let mut tx = db.begin().await?;
        // Sorted: two transactions inserting the same ids (a redelivery racing its first
        // delivery on another replica) take the index entries in one order and cannot deadlock.
        let mut ids: Vec<&str> = group.iter().map(|p| p.meta.message_id.as_str()).collect();
        ids.sort_unstable();
        // The inbox makes effects exactly-once: a message id already recorded by this consumer
        // was applied by a committed transaction, so it is skipped (and acknowledged).
        let fresh: Applied = sqlx::query_scalar(
            "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::text[]) \
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&self.service)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let batch = BatchView {
            events: group
                .iter()
                .filter(|p| fresh.contains(&p.meta.message_id))
                .map(|p| (p.meta.message_type.as_str(), p.event.as_ref()))
                .collect(),
        };
        let mut state = match self.subscriptions.state.load(&mut tx, &batch).await {
            Ok(state) => state,
            Err(error) => {
                tx.rollback().await?;
                return Ok(Err(error));
            }
        };
        let mut staged: Vec<Envelope> = Vec::new();
        let mut counted: Vec<&'static str> = Vec::new();
        for (applied, prepared) in group
            .iter()
            .filter(|p| fresh.contains(&p.meta.message_id))
            .enumerate()
        {
            if crash_after == Some(applied) {
                tx.rollback().await?;
                anyhow::bail!("crash injected after {applied} handlers");
            }
            let parts = Parts {
                conn: &mut tx,
                meta: &prepared.meta,
                staged: &mut staged,
                counted: &mut counted,
            };
            let span = &prepared.span;
            let handled = prepared
                .handler
                .handle(prepared.event.as_ref(), state.as_mut(), parts)
                .instrument(span.clone())
                .await;
            if let Err(error) = handled {
                span.record("otel.status_code", "ERROR");
                span.record("error.message", tracing::field::display(&error));
                tx.rollback().await?;
                return Ok(Err(error));
            }
        }
        if let Err(error) = self.subscriptions.state.store(&mut tx, state).await {
            tx.rollback().await?;
            return Ok(Err(error));
        }
        outbox::stage_envelopes(&mut tx, &staged).await?;
        tx.commit().await?;
        // A span's OpenTelemetry end time is the moment it was last exited (not when it is
        // dropped): each consumer span is entered once more here, so it ends at the commit,
        // not when its handler returned.
        for prepared in group {
            prepared.span.in_scope(|| ());
        }
        // Committed: the relay publishes them at once (the fast path).
        self.waker.committed(staged);
        for name in counted {
            self.metrics.count(name);
        }
        Ok(Ok(fresh))
    }

    /// The consumer span of one message: a child of the producer span whose context the
    /// message carries (OpenTelemetry messaging conventions for the attributes).
    pub(super) fn consumer_span(&self, meta: &IncomingMeta) -> tracing::Span {
        let span = tracing::info_span!(
            "amqp.process",
            otel.name = %format!("{} process", meta.routing_key),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = %self.names.queue(&self.service),
            messaging.rabbitmq.destination.routing_key = %meta.routing_key,
            messaging.message.id = %meta.message_id,
            messaging.message.conversation_id = %meta.correlation_id,
            messaging.consumer.group.name = %self.service,
            shop.retry_count = meta.retry_count,
            shop.service = %self.service,
            trace_id = tracing::field::Empty,
            correlation_id = %meta.correlation_id,
        );
        let remote = TraceFields {
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
        };
        continue_trace(&span, remote.to_context());
        span
    }
}
