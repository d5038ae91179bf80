//! Cursor pagination: the token is the last order id of the page (ids are UUID v7, so id
//! order is creation order). Opaque to callers; a token that does not parse is
//! INVALID_ARGUMENT.

use shop_shared::ids::OrderId;
use uuid::Uuid;

use crate::OrderError;

const PREFIX: &str = "o1_";

/// Where the next page starts (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken(pub OrderId);

impl PageToken {
    /// Parses a request's `page_token`; empty means the first page.
    pub fn parse(raw: &str) -> Result<Option<Self>, OrderError> {
        if raw.is_empty() {
            return Ok(None);
        }
        raw.strip_prefix(PREFIX)
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .map(|id| Some(Self(id.into())))
            .ok_or_else(|| OrderError::InvalidArgument("page_token is not valid".into()))
    }

    /// The token text.
    pub fn encode(self) -> String {
        format!("{PREFIX}{}", self.0.as_uuid().simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let t = PageToken(OrderId::new());
        assert_eq!(PageToken::parse(&t.encode()).unwrap(), Some(t));
        assert_eq!(PageToken::parse("").unwrap(), None);
        assert!(PageToken::parse("garbage").is_err());
        assert!(PageToken::parse("o1_zz").is_err());
    }
}
