//! shop's contracts, generated from `proto/` by the root `build.rs`.
//!
//! Every service, the shared messaging crate and the tests use these types; polyglot consumers
//! compile the same `.proto` files. Nothing here is written by hand except the [`Event`] trait.
//!
//! # Layout
//! - [`user::v1`], [`order::v1`], [`inventory::v1`], [`notification::v1`]: messages, gRPC
//!   clients (`*_client`) and servers (`*_server`) of each domain; [`user::v2`]: the second
//!   shape of `UserCreated`.
//! - [`Event`]: implemented (by code generation, from the `routing_key` proto option) for every
//!   event message, and only for those: publishing and subscribing take `E: Event`.
//! - [`ALL_EVENTS`]: every event type with its routing key.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.

pub mod codec;
#[cfg(test)]
mod compat;

/// The user domain: `shop.user.v1`, and `shop.user.v2` for the events whose shape changed.
pub mod user {
    /// Version 1 of the user contracts.
    pub mod v1 {
        tonic::include_proto!("shop.user.v1");
    }
    /// Version 2 of the user events, published beside version 1 (same message id).
    pub mod v2 {
        tonic::include_proto!("shop.user.v2");
    }
}

/// The order domain: `shop.order.v1`.
pub mod order {
    /// Version 1 of the order contracts.
    pub mod v1 {
        tonic::include_proto!("shop.order.v1");
    }
}

/// The inventory domain: `shop.inventory.v1`.
pub mod inventory {
    /// Version 1 of the inventory contracts.
    pub mod v1 {
        tonic::include_proto!("shop.inventory.v1");
    }
}

/// The notification domain: `shop.notification.v1`.
pub mod notification {
    /// Version 1 of the notification contracts.
    pub mod v1 {
        tonic::include_proto!("shop.notification.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file (imports included), for reflection and
/// for tools that need the schema at run time (the event catalog, the consumers' decoders).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

/// A domain event: a protobuf message published on the `shop.events` exchange.
///
/// Implemented by `build.rs` for exactly the messages whose proto declaration sets the
/// `(shop.events.v1.routing_key)` option, so the routing key lives in one place and a type that
/// is not an event (a request, a `User`) cannot be published or subscribed to: it does not
/// compile.
pub trait Event: prost::Message + Default + Send + Sync + 'static {
    /// The routing key on the topic exchange, e.g. `order.created`.
    const ROUTING_KEY: &'static str;
    /// The full protobuf message name, sent as the AMQP `type` property, e.g.
    /// `shop.order.v1.OrderCreated`.
    const TYPE_NAME: &'static str;
    /// What the event is about, its CloudEvents `subject`: the `order_id` of order and
    /// inventory events, the `user_id` of user events.
    fn subject(&self) -> &str;
}

include!(concat!(env!("OUT_DIR"), "/events.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    /// The events table of docs/contract.md, as `(type, routing key)`.
    const CONTRACT_EVENTS: &[(&str, &str)] = &[
        ("shop.inventory.v1.StockReleased", "inventory.released"),
        (
            "shop.inventory.v1.StockReservationFailed",
            "inventory.reservation_failed",
        ),
        ("shop.inventory.v1.StockReserved", "inventory.reserved"),
        ("shop.order.v1.OrderCancelled", "order.cancelled"),
        ("shop.order.v1.OrderConfirmed", "order.confirmed"),
        ("shop.order.v1.OrderCreated", "order.created"),
        ("shop.order.v1.OrderRejected", "order.rejected"),
        // The order's reservation deadline: a scheduled message only the order service
        // consumes, documented in docs/contract.md ("Order saga", Deadline).
        (
            "shop.order.v1.ReservationDeadline",
            "order.reservation_deadline",
        ),
        ("shop.user.v1.UserCreated", "user.created"),
        ("shop.user.v1.UserUpdated", "user.updated"),
        ("shop.user.v2.UserCreated", "user.created.v2"),
    ];

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
    }

    #[test]
    fn descriptor_set_decodes_and_holds_every_service() {
        let pool = pool();
        for service in [
            "shop.user.v1.UserService",
            "shop.order.v1.OrderService",
            "shop.inventory.v1.InventoryService",
            "shop.notification.v1.NotificationService",
        ] {
            assert!(
                pool.get_service_by_name(service).is_some(),
                "{service} missing"
            );
        }
    }

    #[test]
    fn every_event_in_the_descriptor_set_has_the_routing_key_of_the_contract() {
        let pool = pool();
        let option = pool
            .get_extension_by_name("shop.events.v1.routing_key")
            .expect("the routing_key option is defined");
        // Every message declared in an events.proto file that is published on its own (not a
        // part of another event) must carry a routing key.
        let mut found: Vec<(String, String)> = pool
            .all_messages()
            .filter(|m| m.parent_file().name().ends_with("/events.proto"))
            .filter(|m| !matches!(m.name(), "ReservedItem" | "Shortage" | "PersonName"))
            .filter(|m| !m.is_map_entry())
            .map(|m| {
                let options = m.options();
                let value = options.get_extension(&option);
                let key = value.as_str().unwrap_or_default().to_owned();
                assert!(!key.is_empty(), "{} has no routing key", m.full_name());
                (m.full_name().to_owned(), key)
            })
            .collect();
        found.sort();
        let expected: Vec<(String, String)> = CONTRACT_EVENTS
            .iter()
            .map(|(t, k)| ((*t).to_owned(), (*k).to_owned()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn generated_event_list_matches_the_contract() {
        assert_eq!(ALL_EVENTS, CONTRACT_EVENTS);
    }

    #[test]
    fn generated_impls_carry_the_contract_keys_and_names() {
        fn pair<E: Event>() -> (&'static str, &'static str) {
            (E::TYPE_NAME, E::ROUTING_KEY)
        }
        let generated = [
            pair::<inventory::v1::StockReleased>(),
            pair::<inventory::v1::StockReservationFailed>(),
            pair::<inventory::v1::StockReserved>(),
            pair::<order::v1::OrderCancelled>(),
            pair::<order::v1::OrderConfirmed>(),
            pair::<order::v1::OrderCreated>(),
            pair::<order::v1::OrderRejected>(),
            pair::<order::v1::ReservationDeadline>(),
            pair::<user::v1::UserCreated>(),
            pair::<user::v1::UserUpdated>(),
            pair::<user::v2::UserCreated>(),
        ];
        assert_eq!(generated.as_slice(), CONTRACT_EVENTS);
    }
}
