//! The statuses as a text column (feature `sqlx`): a row reads and writes an [`OrderStatus`]
//! or a [`ReservationStatus`] as the text its table's CHECK allows, so no row type carries a
//! status as a bare string. A text the type does not know fails the row's decoding (the
//! CHECK constraint keeps it from happening).
//!
//! [`stored_as_text!`](crate::stored_as_text) is the one way a status enum (with `as_str` and
//! `parse`) becomes a text column: the notification service's delivery status uses it too.

use crate::inventory::ReservationStatus;
use crate::order::OrderStatus;

/// Implements `sqlx::Type`, `Encode` and `Decode` (PostgreSQL `text`) for a status enum with
/// `fn as_str(self) -> &'static str` and `fn parse(&str) -> Option<Self>`. The calling crate
/// needs `sqlx` as a dependency.
#[macro_export]
macro_rules! stored_as_text {
    ($status:ty) => {
        impl ::sqlx::Type<::sqlx::Postgres> for $status {
            fn type_info() -> ::sqlx::postgres::PgTypeInfo {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &::sqlx::postgres::PgTypeInfo) -> bool {
                <&str as ::sqlx::Type<::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl ::sqlx::Encode<'_, ::sqlx::Postgres> for $status {
            fn encode_by_ref(
                &self,
                buf: &mut ::sqlx::postgres::PgArgumentBuffer,
            ) -> Result<::sqlx::encode::IsNull, ::sqlx::error::BoxDynError> {
                <&str as ::sqlx::Encode<::sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl ::sqlx::Decode<'_, ::sqlx::Postgres> for $status {
            fn decode(
                value: ::sqlx::postgres::PgValueRef<'_>,
            ) -> Result<Self, ::sqlx::error::BoxDynError> {
                let text = <&str as ::sqlx::Decode<::sqlx::Postgres>>::decode(value)?;
                <$status>::parse(text).ok_or_else(|| {
                    format!(concat!("unknown ", stringify!($status), " {:?}"), text).into()
                })
            }
        }
    };
}

stored_as_text!(OrderStatus);
stored_as_text!(ReservationStatus);
