//! The caller's idempotency key of a CreateOrder: bounded, no control characters, blanks
//! trimmed. A retried CreateOrder with the same key (per customer) returns the first order.

use shop_shared::input::no_control;

use crate::OrderError;

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

/// A valid idempotency key (never empty: an empty field means none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of a request field; `None` when the field is empty or blank.
    pub fn parse(raw: &str) -> Result<Option<Self>, OrderError> {
        let key = raw.trim();
        if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(OrderError::InvalidArgument(format!(
                "idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"
            )));
        }
        no_control("idempotency_key", key).map_err(OrderError::InvalidArgument)?;
        Ok((!key.is_empty()).then(|| Self(key.to_owned())))
    }

    /// The key as stored in `orders.idempotency_key`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_trimmed_and_an_empty_one_is_none() {
        assert_eq!(IdempotencyKey::parse("  ").unwrap(), None);
        assert_eq!(
            IdempotencyKey::parse(" k1 ").unwrap().unwrap().as_str(),
            "k1"
        );
    }

    #[test]
    fn a_key_too_long_or_with_control_characters_is_invalid() {
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1);
        assert!(IdempotencyKey::parse(&long).is_err());
        assert!(IdempotencyKey::parse("a\u{7}b").is_err());
        assert!(IdempotencyKey::parse(&long[1..]).unwrap().is_some());
    }
}
