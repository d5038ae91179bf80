//! Compatibility with the last released contract, proven on the wire.
//!
//! `proto/compat/<version>.binpb` is the descriptor set of the last release (`buf build proto
//! -o proto/compat/<version>.binpb`, refreshed at each release: docs/contracts.md, "Changing a
//! contract"). For every event type of that release, a sample with every field set is encoded
//! with the old descriptor and decoded with today's generated type, and the other way round
//! (a sample of today's shape decoded with the old descriptor); the fields the old contract
//! knows must come through unchanged, field by field, by name and number. A renumbered,
//! retyped or removed field fails here, whatever `buf breaking` was told.

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value,
};

use crate::Event;

/// The descriptor set of the last released contract.
const RELEASED: &[u8] = include_bytes!("../proto/compat/v0.1.0.binpb");

fn released() -> DescriptorPool {
    DescriptorPool::decode(RELEASED).expect("the released descriptor set decodes")
}

fn current() -> DescriptorPool {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

/// A value for `field` that is not its default, derived from its number (so a field that
/// moved gets another value than the one it had).
fn sample_value(field: &FieldDescriptor, kind: &Kind, depth: u32) -> Value {
    let n = field.number();
    match kind {
        Kind::String => Value::String(format!("{}-{n}", field.name())),
        Kind::Bytes => Value::Bytes(vec![n as u8, 7].into()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(n as i32 * 11),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(i64::from(n) * 1_000_003),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n * 13),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(u64::from(n) * 17),
        Kind::Float => Value::F32(n as f32 + 0.5),
        Kind::Double => Value::F64(f64::from(n) + 0.25),
        Kind::Enum(e) => Value::EnumNumber(e.values().last().map_or(0, |v| v.number())),
        Kind::Message(m) => Value::Message(sample(m, depth + 1)),
    }
}

/// A message of `descriptor` with every field set (lists with two elements, maps with one
/// entry), nested messages too.
fn sample(descriptor: &MessageDescriptor, depth: u32) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if depth > 3 {
        return message;
    }
    for field in descriptor.fields() {
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let key_field = entry.map_entry_key_field();
            let value_field = entry.map_entry_value_field();
            let key = match sample_value(&key_field, &key_field.kind(), depth) {
                Value::String(s) => MapKey::String(s),
                Value::I32(i) => MapKey::I32(i),
                Value::I64(i) => MapKey::I64(i),
                Value::U32(i) => MapKey::U32(i),
                Value::U64(i) => MapKey::U64(i),
                Value::Bool(b) => MapKey::Bool(b),
                other => panic!("{other:?} cannot be a map key"),
            };
            let value = sample_value(&value_field, &value_field.kind(), depth);
            Value::Map([(key, value)].into_iter().collect())
        } else if field.is_list() {
            let one = sample_value(&field, &field.kind(), depth);
            Value::List(vec![one.clone(), one])
        } else {
            sample_value(&field, &field.kind(), depth)
        };
        message.set_field(&field, value);
    }
    message
}

/// `message` with only the fields that `known` (the same message in the other contract)
/// has, by number, nested messages included: what a consumer of the other contract can see.
fn restrict(message: &DynamicMessage, known: &MessageDescriptor) -> DynamicMessage {
    let mut copy = message.clone();
    for field in message.descriptor().fields() {
        let Some(other) = known.get_field(field.number()) else {
            copy.clear_field(&field);
            continue;
        };
        let Kind::Message(other_kind) = other.kind() else {
            continue;
        };
        if field.is_map() {
            continue;
        }
        let value = match message.get_field(&field).as_ref() {
            Value::Message(inner) => Value::Message(restrict(inner, &other_kind)),
            Value::List(items) => Value::List(
                items
                    .iter()
                    .map(|item| match item {
                        Value::Message(inner) => Value::Message(restrict(inner, &other_kind)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            _ => continue,
        };
        copy.set_field(&field, value);
    }
    copy
}

fn json(message: &DynamicMessage) -> serde_json::Value {
    serde_json::to_value(message).expect("a dynamic message serialises")
}

/// Checks one event type both ways against the released contract.
fn check<E: Event>() -> bool {
    let (released, current) = (released(), current());
    let Some(old) = released.get_message_by_name(E::TYPE_NAME) else {
        return false; // new since the release: nothing to be compatible with
    };
    let new = current
        .get_message_by_name(E::TYPE_NAME)
        .expect("every generated event is in the descriptor set");

    // Old producer, new consumer: a message of the released shape, decoded by today's type.
    let old_sample = sample(&old, 0);
    let decoded = E::decode(old_sample.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("{}: a released message does not decode: {e}", E::TYPE_NAME));
    let seen = DynamicMessage::decode(new.clone(), decoded.encode_to_vec().as_slice())
        .expect("today's encoding decodes");
    assert_eq!(
        json(&seen),
        json(&old_sample),
        "{}: a released message reads differently with today's type",
        E::TYPE_NAME
    );

    // New producer, old consumer: today's shape, every field set, decoded by the released
    // descriptor; what the old contract knows is unchanged, the rest is ignored.
    let new_sample = sample(&new, 0);
    let bytes = E::decode(new_sample.encode_to_vec().as_slice())
        .expect("today's sample decodes with today's type")
        .encode_to_vec();
    let old_view = DynamicMessage::decode(old.clone(), bytes.as_slice()).unwrap_or_else(|e| {
        panic!(
            "{}: today's message does not decode with the release: {e}",
            E::TYPE_NAME
        )
    });
    assert_eq!(
        json(&old_view),
        json(&restrict(&new_sample, &old)),
        "{}: a consumer of the release reads today's message differently",
        E::TYPE_NAME
    );
    true
}

#[test]
fn every_released_event_reads_the_same_both_ways_with_todays_types() {
    let checked = [
        (
            "shop.inventory.v1.StockReleased",
            check::<crate::inventory::v1::StockReleased>(),
        ),
        (
            "shop.inventory.v1.StockReservationFailed",
            check::<crate::inventory::v1::StockReservationFailed>(),
        ),
        (
            "shop.inventory.v1.StockReserved",
            check::<crate::inventory::v1::StockReserved>(),
        ),
        (
            "shop.order.v1.OrderCancelled",
            check::<crate::order::v1::OrderCancelled>(),
        ),
        (
            "shop.order.v1.OrderConfirmed",
            check::<crate::order::v1::OrderConfirmed>(),
        ),
        (
            "shop.order.v1.OrderCreated",
            check::<crate::order::v1::OrderCreated>(),
        ),
        (
            "shop.order.v1.OrderRejected",
            check::<crate::order::v1::OrderRejected>(),
        ),
        (
            "shop.order.v1.ReservationDeadline",
            check::<crate::order::v1::ReservationDeadline>(),
        ),
        (
            "shop.user.v1.UserCreated",
            check::<crate::user::v1::UserCreated>(),
        ),
        (
            "shop.user.v1.UserUpdated",
            check::<crate::user::v1::UserUpdated>(),
        ),
        (
            "shop.user.v2.UserCreated",
            check::<crate::user::v2::UserCreated>(),
        ),
    ];
    // Every event of today is listed, and every event of the release was checked.
    let listed: Vec<&str> = checked.iter().map(|(name, _)| *name).collect();
    let all: Vec<&str> = crate::ALL_EVENTS.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, all, "add the new event type to this list");
    let released = released();
    for (name, was_checked) in checked {
        assert_eq!(
            was_checked,
            released.get_message_by_name(name).is_some(),
            "{name}"
        );
    }
}

#[test]
fn a_renumbered_field_is_caught() {
    // The comparison itself: the released OrderCreated read by a contract whose order_id
    // moved from 1 to 9 no longer reads the same.
    let released = released();
    let old = released
        .get_message_by_name("shop.order.v1.OrderCreated")
        .unwrap();
    let mut set = prost_types::FileDescriptorSet::default();
    for file in released.file_descriptor_protos() {
        let mut file = file.clone();
        for message in file
            .message_type
            .iter_mut()
            .filter(|m| m.name() == "OrderCreated")
        {
            for field in message.field.iter_mut().filter(|f| f.name() == "order_id") {
                field.number = Some(9);
            }
        }
        set.file.push(file);
    }
    let moved = DescriptorPool::from_file_descriptor_set(set)
        .unwrap()
        .get_message_by_name("shop.order.v1.OrderCreated")
        .unwrap();
    let old_sample = sample(&old, 0);
    let seen = DynamicMessage::decode(moved, old_sample.encode_to_vec().as_slice()).unwrap();
    assert_ne!(json(&seen), json(&old_sample));
}
