//! Validated inventory input.

use serde::{Deserialize, Serialize};
use shop_proto::inventory::v1::AdjustStockRequest;

use crate::InventoryError;

/// The longest product id accepted (the same bound as the order service's).
pub const MAX_PRODUCT_ID_CHARS: usize = 128;

/// A non-empty product id of bounded length, without control characters; stored as the
/// `product_id` text column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[sqlx(transparent)]
pub struct ProductId(String);

impl ProductId {
    /// Validates a product id.
    pub fn parse(raw: &str) -> Result<Self, InventoryError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(InventoryError::InvalidArgument(
                "product_id must not be empty".into(),
            ));
        }
        if id.chars().count() > MAX_PRODUCT_ID_CHARS {
            return Err(InventoryError::InvalidArgument(format!(
                "product_id must be at most {MAX_PRODUCT_ID_CHARS} characters"
            )));
        }
        shop_shared::input::no_control("product_id", id)
            .map_err(InventoryError::InvalidArgument)?;
        Ok(Self(id.to_owned()))
    }

    /// The product a GetStock asks for: `None` when no product can have that id (empty or
    /// too long: docs/contract.md gives GetStock one error, NOT_FOUND, for those); only a
    /// control character (NUL above all) is INVALID_ARGUMENT.
    pub fn lookup(raw: &str) -> Result<Option<Self>, InventoryError> {
        let id = raw.trim();
        shop_shared::input::no_control("product_id", id)
            .map_err(InventoryError::InvalidArgument)?;
        if id.is_empty() || id.chars().count() > MAX_PRODUCT_ID_CHARS {
            return Ok(None);
        }
        Ok(Some(Self(id.to_owned())))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ProductId> for String {
    fn from(id: ProductId) -> Self {
        id.0
    }
}

/// A valid AdjustStock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockAdjustment {
    /// Which product.
    pub product_id: ProductId,
    /// The change of available units, never 0.
    pub delta: i64,
}

impl TryFrom<AdjustStockRequest> for StockAdjustment {
    type Error = InventoryError;

    fn try_from(r: AdjustStockRequest) -> Result<Self, Self::Error> {
        let product_id = ProductId::parse(&r.product_id)?;
        if r.delta == 0 {
            return Err(InventoryError::InvalidArgument(
                "delta must not be 0".into(),
            ));
        }
        Ok(Self {
            product_id,
            delta: r.delta,
        })
    }
}

/// Units of one product held for an order (stored in the reservation row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The product.
    pub product_id: String,
    /// How many units.
    pub quantity: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ids_and_zero_deltas_are_invalid() {
        let request = |id: &str, delta| AdjustStockRequest {
            product_id: id.into(),
            delta,
        };
        assert!(StockAdjustment::try_from(request("", 1)).is_err());
        assert!(StockAdjustment::try_from(request("  ", 1)).is_err());
        assert!(StockAdjustment::try_from(request("a", 0)).is_err());
        assert!(StockAdjustment::try_from(request(&"x".repeat(129), 1)).is_err());
        assert_eq!(
            StockAdjustment::try_from(request(" a ", -2))
                .unwrap()
                .product_id
                .as_str(),
            "a"
        );
    }
}

/// Fuzzing AdjustStock's validation (proptest): any input never panics, and an accepted product
/// id holds no control character.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn adjust_stock(product_id in prop_oneof![".{0,200}", "[a-c \u{0}\n]{0,8}"], delta in any::<i64>()) {
            if let Ok(adjustment) = StockAdjustment::try_from(AdjustStockRequest { product_id, delta }) {
                prop_assert!(!adjustment.product_id.as_str().chars().any(char::is_control));
                prop_assert!(adjustment.delta != 0);
            }
        }
    }
}
