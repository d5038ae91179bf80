//! The ids the services pass around, one type each, so an order id cannot be handed where a
//! customer id is wanted: each a UUID, stored in a `uuid` column (`sqlx` transparent), parsed
//! once where it comes in (a request field, an event field) and shown as its hyphenated text.
//!
//! New ids are UUID v7 (time-ordered: an index on them grows at its end).

use std::fmt;

use uuid::Uuid;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {shown} is not a UUID")]
pub struct BadId {
    /// The field the string came from (`order_id`, `customer_id`, …).
    pub field: &'static str,
    /// The string, bounded and quoted for a message ([`crate::input::shown`]).
    pub shown: String,
}

/// What every id type is: a UUID under a field name.
pub trait Id: From<Uuid> + Copy + fmt::Display {
    /// The field name this id travels under in requests and events.
    const FIELD: &'static str;
}

/// The id in `raw`, exactly a UUID's text (an event field: written by a service, never padded).
pub fn parse_exact<I: Id>(raw: &str) -> Result<I, BadId> {
    Uuid::parse_str(raw).map(I::from).map_err(|_| BadId {
        field: I::FIELD,
        shown: crate::input::shown(raw),
    })
}

impl From<BadId> for tonic::Status {
    /// A request field that is not an id: INVALID_ARGUMENT, naming the field.
    fn from(e: BadId) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the id in a request or event field (surrounding blanks ignored).
            pub fn parse(raw: &str) -> Result<Self, BadId> {
                Uuid::parse_str(raw.trim()).map(Self).map_err(|_| BadId {
                    field: $field,
                    shown: crate::input::shown(raw),
                })
            }

            /// The UUID, for code that works on bare UUIDs (the saga's pure decisions).
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl Id for $name {
            const FIELD: &'static str = $field;
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An order (the order service's `orders.order_id`).
    OrderId,
    "order_id"
);
id_type!(
    /// A user (the user service's `users.user_id`); the order service calls one a customer.
    UserId,
    "user_id"
);
id_type!(
    /// The user who places an order: a [`UserId`] as the order service knows it.
    CustomerId,
    "customer_id"
);
id_type!(
    /// A notification (the notification service's `notifications.notification_id`).
    NotificationId,
    "notification_id"
);

impl From<UserId> for CustomerId {
    fn from(id: UserId) -> Self {
        Self(id.0)
    }
}

impl From<CustomerId> for UserId {
    /// A customer is a user: whether a caller may act for a customer is asked of its user.
    fn from(id: CustomerId) -> Self {
        Self(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_parses_its_text_and_shows_it_back() {
        let id = OrderId::new();
        assert_eq!(OrderId::parse(&format!(" {id} ")), Ok(id));
    }

    #[test]
    fn a_bad_id_names_its_field_and_shows_the_text_bounded() {
        let err = CustomerId::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "customer_id \"nope\" is not a UUID");
        let long = "x".repeat(10_000);
        assert!(OrderId::parse(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn an_event_field_must_be_exactly_an_id() {
        let id = OrderId::new();
        assert_eq!(parse_exact::<OrderId>(&id.to_string()), Ok(id));
        assert!(parse_exact::<OrderId>(&format!(" {id}")).is_err());
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let (a, b) = (UserId::new(), UserId::new());
        assert!(a < b);
    }
}
