//! Where an order's time goes. While the fixed-rate phase runs, an in-process span processor
//! keeps the start and end of the spans each order's trace is made of (the CreateOrder call,
//! every publish, every process), and each complete saga is cut into its hops:
//!
//! ```text
//! CreateOrder answered ─▶ order.created confirmed ─▶ taken up by inventory ─▶ committed
//!   ─▶ inventory.reserved confirmed ─▶ taken up by order ─▶ committed
//!   ─▶ order.confirmed confirmed ─▶ applied by notification
//! ```
//!
//! A publish span ends when the broker confirmed the message; a process span starts when the
//! consumer takes the message up in a batch and ends when the transaction that applied it
//! committed (the batch's ack follows). All of it runs in this process, so every time is read
//! off one clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TraceId;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::stats::{Percentiles, Samples};

/// The hops, in saga order: the key of their JSON figures (`hop_<name>_p50_ms`) and what they
/// measure.
pub const HOPS: [(&str, &str); 8] = [
    (
        "order_created_confirmed",
        "CreateOrder answered → order.created confirmed by the broker",
    ),
    (
        "delivered_to_inventory",
        "→ taken up by the inventory's consumer",
    ),
    ("inventory_committed", "→ inventory's transaction committed"),
    (
        "inventory_reserved_confirmed",
        "→ inventory.reserved confirmed by the broker",
    ),
    ("delivered_to_order", "→ taken up by the order's consumer"),
    ("order_committed", "→ order's transaction committed"),
    (
        "order_confirmed_confirmed",
        "→ order.confirmed confirmed by the broker",
    ),
    (
        "applied_by_notification",
        "→ applied by notification (committed)",
    ),
];

/// The relay hops: a commit (or CreateOrder's answer) until the broker confirmed the event.
pub const RELAY_HOPS: [&str; 3] = [
    "order_created_confirmed",
    "inventory_reserved_confirmed",
    "order_confirmed_confirmed",
];

/// The event each relay hop publishes, in [`RELAY_HOPS`]' order.
const RELAY_KEYS: [&str; 3] = ["order.created", "inventory.reserved", "order.confirmed"];

/// What [`HopRecorder::hops`] measured.
#[derive(Debug, Clone, Default)]
pub struct HopFigures {
    /// Each hop of [`HOPS`].
    pub hops: Vec<Percentiles>,
    /// The broker's confirm of every publish of those sagas.
    pub broker_confirm: Percentiles,
    /// The broker's confirm of each relay hop's own event, in [`RELAY_HOPS`]' order (a batch's
    /// events may wait longer for theirs than a lone event).
    pub relay_confirms: Vec<Percentiles>,
    /// Sagas measured.
    pub sagas: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CreateOrder,
    Publish,
    Process,
}

#[derive(Debug, Clone)]
struct Point {
    kind: Kind,
    routing_key: String,
    service: String,
    start: SystemTime,
    end: SystemTime,
}

/// The bench's span processor: collects while switched on, nothing otherwise.
#[derive(Debug, Clone, Default)]
pub struct HopRecorder {
    on: Arc<AtomicBool>,
    traces: Arc<Mutex<HashMap<TraceId, Vec<Point>>>>,
}

impl HopRecorder {
    /// Starts collecting (forgetting what was collected before).
    pub fn start(&self) {
        self.lock().clear();
        self.on.store(true, Ordering::Release);
    }

    /// Stops collecting.
    pub fn stop(&self) {
        self.on.store(false, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TraceId, Vec<Point>>> {
        self.traces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The percentiles of every hop over the complete sagas collected (an order confirmed and
    /// notified), then of the broker's confirms alone (each publish span, from the publish to
    /// the confirm: the part of a relay hop the relay cannot shorten), and how many sagas that
    /// was.
    pub fn hops(&self) -> HopFigures {
        let mut samples: Vec<Samples> = vec![Samples::default(); HOPS.len()];
        let mut confirms = Samples::default();
        let mut by_key: Vec<Samples> = vec![Samples::default(); RELAY_KEYS.len()];
        let mut complete = 0;
        for points in self.lock().values() {
            if let Some(times) = saga(points) {
                complete += 1;
                for publish in points.iter().filter(|p| p.kind == Kind::Publish) {
                    let took = publish
                        .end
                        .duration_since(publish.start)
                        .unwrap_or(Duration::ZERO);
                    confirms.record(took);
                    if let Some(i) = RELAY_KEYS.iter().position(|k| *k == publish.routing_key) {
                        by_key[i].record(took);
                    }
                }
                for (i, pair) in times.windows(2).enumerate() {
                    samples[i].record(pair[1].duration_since(pair[0]).unwrap_or(Duration::ZERO));
                }
            }
        }
        HopFigures {
            hops: samples.iter().map(Samples::percentiles).collect(),
            broker_confirm: confirms.percentiles(),
            relay_confirms: by_key.iter().map(Samples::percentiles).collect(),
            sagas: complete,
        }
    }
}

/// The nine instants of one confirmed saga, or `None` when a span is missing (a rejected
/// order, a saga still running when the phase ended). Of several spans of one kind (a
/// duplicate delivery, a retry) the first counts.
fn saga(points: &[Point]) -> Option<[SystemTime; 9]> {
    let first = |kind: Kind, key: &str, service: &str| {
        points
            .iter()
            .filter(|p| {
                p.kind == kind
                    && (key.is_empty() || p.routing_key == key)
                    && (service.is_empty() || p.service == service)
            })
            .min_by_key(|p| p.start)
    };
    let create = first(Kind::CreateOrder, "", "")?;
    let created = first(Kind::Publish, "order.created", "order")?;
    let at_inventory = first(Kind::Process, "order.created", "inventory")?;
    let reserved = first(Kind::Publish, "inventory.reserved", "inventory")?;
    let at_order = first(Kind::Process, "inventory.reserved", "order")?;
    let confirmed = first(Kind::Publish, "order.confirmed", "order")?;
    let at_notification = first(Kind::Process, "order.confirmed", "notification")?;
    Some([
        create.end,
        created.end,
        at_inventory.start,
        at_inventory.end,
        reserved.end,
        at_order.start,
        at_order.end,
        confirmed.end,
        at_notification.end,
    ])
}

impl SpanProcessor for HopRecorder {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        let name = span.name.as_ref();
        let kind = if name.ends_with("OrderService/CreateOrder") {
            Kind::CreateOrder
        } else if name.ends_with(" publish") {
            Kind::Publish
        } else if name.ends_with(" process") {
            Kind::Process
        } else {
            return;
        };
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.as_str().into_owned())
                .unwrap_or_default()
        };
        let point = Point {
            kind,
            routing_key: attribute("messaging.rabbitmq.destination.routing_key"),
            service: attribute("shop.service"),
            start: span.start_time,
            end: span.end_time,
        };
        self.lock()
            .entry(span.span_context.trace_id())
            .or_default()
            .push(point);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(kind: Kind, key: &str, service: &str, start_ms: u64, end_ms: u64) -> Point {
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        Point {
            kind,
            routing_key: key.into(),
            service: service.into(),
            start: at(start_ms),
            end: at(end_ms),
        }
    }

    #[test]
    fn a_confirmed_saga_is_cut_into_its_eight_hops() {
        let points = vec![
            point(Kind::CreateOrder, "", "order", 0, 2),
            point(Kind::Publish, "order.created", "order", 3, 5),
            point(Kind::Process, "order.created", "inventory", 6, 9),
            point(Kind::Publish, "inventory.reserved", "inventory", 10, 13),
            point(Kind::Process, "inventory.reserved", "order", 14, 18),
            point(Kind::Publish, "order.confirmed", "order", 19, 23),
            point(Kind::Process, "order.confirmed", "notification", 24, 30),
            // A duplicate delivery later on does not count.
            point(Kind::Process, "order.created", "inventory", 40, 41),
        ];
        let times = saga(&points).expect("complete");
        let ms: Vec<u128> = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap().as_millis())
            .collect();
        assert_eq!(ms, [3, 1, 3, 4, 1, 4, 5, 7]);
        assert_eq!(saga(&points[..4]), None, "an unfinished saga is left out");
    }
}
