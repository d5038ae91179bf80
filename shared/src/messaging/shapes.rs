//! One event in several shapes: how a contract evolves without a flag day.
//!
//! A breaking change to an event is a new package (`shop.user.v2.UserCreated`) published
//! *beside* the old one until every consumer of the old one has moved. Both shapes are the
//! same event: they are staged in the caller's transaction by one call, under one
//! `message_id` (a consumer bound to both applies it once, through its inbox), each with its
//! own type and routing key. When the last consumer of the old shape has moved, the setting
//! `RETIRED_ROUTING_KEYS` stops its publication ([`Retired`]); nothing else changes.
//!
//! ```ignore
//! let shapes = Shapes::of(&v1::UserCreated { .. }, &context).and(&v2::UserCreated { .. });
//! outbox::stage_shapes(&mut tx, shapes, &retired).await?;
//! ```

use shop_proto::Event;

use super::envelope::{Envelope, EventContext, MessageId};

/// The shapes of one event, staged together with one message id.
#[derive(Debug, Clone)]
pub struct Shapes {
    envelopes: Vec<Envelope>,
}

impl Shapes {
    /// The event's first (oldest) shape, with a fresh message id and `context`.
    pub fn of<E: Event>(event: &E, context: &EventContext) -> Self {
        Self {
            envelopes: vec![Envelope::new(event, "", context)],
        }
    }

    /// Another shape of the same event, newer than the ones before: the same message id and
    /// context, its own type and routing key.
    pub fn and<E: Event>(mut self, event: &E) -> Self {
        let first = &self.envelopes[0];
        let envelope = Envelope {
            message_id: first.message_id,
            correlation_id: first.correlation_id.clone(),
            causation_id: first.causation_id.clone(),
            actor_id: first.actor_id.clone(),
            traceparent: first.traceparent.clone(),
            tracestate: first.tracestate.clone(),
            ..Envelope::new(event, "", &EventContext::default())
        };
        self.envelopes.push(envelope);
        self
    }

    /// The event's message id, the same for every shape.
    pub fn message_id(&self) -> MessageId {
        self.envelopes[0].message_id
    }

    /// The envelopes to stage: every shape except the retired ones, but never none (the newest
    /// shape is always published).
    pub fn to_publish(self, retired: &Retired) -> Vec<Envelope> {
        let newest = self.envelopes.len() - 1;
        self.envelopes
            .into_iter()
            .enumerate()
            .filter(|(i, e)| *i == newest || !retired.contains(&e.routing_key))
            .map(|(_, e)| e)
            .collect()
    }
}

/// The routing keys whose shape is no longer published (`RETIRED_ROUTING_KEYS`, comma
/// separated, empty by default): an old shape of an event that has a newer one, once every
/// consumer reads the newer one. A retired key of an event that has no newer shape changes
/// nothing (the newest shape is always published).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired(Vec<String>);

impl Retired {
    /// Parses the setting: routing keys separated by commas; each must be an event of the
    /// contract.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for key in raw.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            if !shop_proto::ALL_EVENTS.iter().any(|(_, k)| *k == key) {
                return Err(format!(
                    "{key:?} is not the routing key of an event (one of: {})",
                    shop_proto::ALL_EVENTS
                        .iter()
                        .map(|(_, k)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            keys.push(key.to_owned());
        }
        Ok(Self(keys))
    }

    /// Whether `routing_key` is retired.
    pub fn contains(&self, routing_key: &str) -> bool {
        self.0.iter().any(|k| k == routing_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_proto::user::{v1, v2};

    fn shapes() -> Shapes {
        let v1 = v1::UserCreated {
            user_id: "u-1".into(),
            ..Default::default()
        };
        let v2 = v2::UserCreated {
            user_id: "u-1".into(),
            ..Default::default()
        };
        Shapes::of(&v1, &EventContext::with_correlation_id("c-1")).and(&v2)
    }

    #[test]
    fn every_shape_has_the_same_id_and_context_and_its_own_type_and_key() {
        let envelopes = shapes().to_publish(&Retired::default());
        let keys: Vec<_> = envelopes.iter().map(|e| e.routing_key.as_str()).collect();
        assert_eq!(keys, ["user.created", "user.created.v2"]);
        assert_eq!(envelopes[0].message_id, envelopes[1].message_id);
        assert_eq!(envelopes[1].correlation_id, "c-1");
        assert_eq!(envelopes[1].message_type, "shop.user.v2.UserCreated");
        assert_eq!(envelopes[1].subject, "u-1");
    }

    #[test]
    fn a_retired_shape_is_left_out_but_the_newest_never() {
        let retired = Retired::parse("user.created").unwrap();
        let keys: Vec<_> = shapes()
            .to_publish(&retired)
            .into_iter()
            .map(|e| e.routing_key)
            .collect();
        assert_eq!(keys, ["user.created.v2"]);
        let both = Retired::parse("user.created, user.created.v2").unwrap();
        assert_eq!(shapes().to_publish(&both).len(), 1);
    }

    #[test]
    fn an_unknown_routing_key_is_refused() {
        let error = Retired::parse("user.create").unwrap_err();
        assert!(error.contains("user.created.v2"), "{error}");
        assert_eq!(Retired::parse(" ").unwrap(), Retired::default());
    }
}
