//! Every broker name, derived from one prefix (`AMQP_PREFIX`), so tests running in parallel
//! on one broker never see each other's messages.

use std::time::Duration;

/// The names of the exchange and queues, all derived from `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// Prepended to every name; empty in production.
    pub prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The topic exchange every event is published to: `{p}shop.events`.
    pub fn exchange(&self) -> String {
        format!("{}shop.events", self.prefix)
    }

    /// A consuming service's queue: `{p}<service>`.
    pub fn queue(&self, service: &str) -> String {
        format!("{}{service}", self.prefix)
    }

    /// The retry queue holding messages for `delay` before they return to the service queue:
    /// `{p}<service>.retry.<delay>ms`. Named by its delay so a changed retry policy declares
    /// new queues instead of clashing with the arguments of old ones.
    pub fn retry_queue(&self, service: &str, delay: Duration) -> String {
        format!("{}{service}.retry.{}ms", self.prefix, delay.as_millis())
    }

    /// The dead-letter queue of a service: `{p}<service>.dlq`.
    pub fn dlq(&self, service: &str) -> String {
        format!("{}{service}.dlq", self.prefix)
    }

    /// The client-provided connection name shown by `rabbitmqctl list_connections`; it carries
    /// the prefix so a test can close exactly its own connections.
    pub fn connection_name(&self, service: &str, role: &str) -> String {
        if self.prefix.is_empty() {
            format!("shop-{service}-{role}")
        } else {
            format!("{}shop-{service}-{role}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let n = Names::new("t1_");
        assert_eq!(n.exchange(), "t1_shop.events");
        assert_eq!(n.queue("order"), "t1_order");
        assert_eq!(n.dlq("order"), "t1_order.dlq");
        assert_eq!(
            n.retry_queue("order", Duration::from_secs(5)),
            "t1_order.retry.5000ms"
        );
        assert!(n.connection_name("order", "relay").starts_with("t1_"));
    }

    #[test]
    fn production_names_match_the_contract() {
        let n = Names::default();
        assert_eq!(n.exchange(), "shop.events");
        assert_eq!(n.queue("inventory"), "inventory");
        assert_eq!(n.dlq("inventory"), "inventory.dlq");
    }
}
