//! Validated orders: a request that becomes a [`NewOrder`] cannot be invalid.

mod idempotency_key;
mod page_token;
mod status;

pub use idempotency_key::{IdempotencyKey, MAX_IDEMPOTENCY_KEY_CHARS};
pub use page_token::PageToken;
pub use status::{OrderStatus, to_proto};

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use shop_proto::order::v1::{CreateOrderRequest, LineItem};
use shop_shared::ids::CustomerId;
use shop_shared::input::no_control;

use crate::OrderError;

/// The most line items an order may have (docs/contract.md).
pub const MAX_ITEMS: usize = 100;
/// The longest product id accepted.
pub const MAX_PRODUCT_ID_CHARS: usize = 128;
/// The longest cancellation reason accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// One validated line item, as stored (JSONB) and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Non-empty product id.
    pub product_id: String,
    /// At least 1.
    pub quantity: i32,
    /// At least 0.
    pub unit_price_cents: i64,
}

impl From<&Item> for LineItem {
    fn from(i: &Item) -> Self {
        LineItem {
            product_id: i.product_id.clone(),
            quantity: i.quantity,
            unit_price_cents: i.unit_price_cents,
        }
    }
}

/// A valid CreateOrder request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    /// The ordering customer.
    pub customer_id: CustomerId,
    /// 1 to [`MAX_ITEMS`] items, each product once.
    pub items: Vec<Item>,
    /// Σ quantity × unit price, checked for overflow.
    pub total_cents: i64,
    /// The caller's idempotency key, when given.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl TryFrom<CreateOrderRequest> for NewOrder {
    type Error = OrderError;

    fn try_from(r: CreateOrderRequest) -> Result<Self, Self::Error> {
        let invalid = |m: String| OrderError::InvalidArgument(m);
        let customer_id = CustomerId::parse(&r.customer_id)?;
        if r.items.is_empty() {
            return Err(invalid("an order needs at least one item".into()));
        }
        if r.items.len() > MAX_ITEMS {
            return Err(invalid(format!(
                "an order may have at most {MAX_ITEMS} items, got {}",
                r.items.len()
            )));
        }
        let mut seen = HashSet::with_capacity(r.items.len());
        let mut items = Vec::with_capacity(r.items.len());
        let mut total: i64 = 0;
        for (i, item) in r.items.into_iter().enumerate() {
            let product_id = item.product_id.trim().to_owned();
            if product_id.is_empty() {
                return Err(invalid(format!("items[{i}].product_id must not be empty")));
            }
            if product_id.chars().count() > MAX_PRODUCT_ID_CHARS {
                return Err(invalid(format!(
                    "items[{i}].product_id must be at most {MAX_PRODUCT_ID_CHARS} characters"
                )));
            }
            no_control(&format!("items[{i}].product_id"), &product_id).map_err(invalid)?;
            if item.quantity <= 0 {
                return Err(invalid(format!(
                    "items[{i}].quantity must be at least 1, got {}",
                    item.quantity
                )));
            }
            if item.unit_price_cents < 0 {
                return Err(invalid(format!(
                    "items[{i}].unit_price_cents must not be negative, got {}",
                    item.unit_price_cents
                )));
            }
            if !seen.insert(product_id.clone()) {
                return Err(invalid(format!(
                    "product {product_id:?} appears more than once; use one item with the total quantity"
                )));
            }
            total = i64::from(item.quantity)
                .checked_mul(item.unit_price_cents)
                .and_then(|line| total.checked_add(line))
                .ok_or_else(|| {
                    invalid("the order total overflows a 64-bit number of cents".into())
                })?;
            items.push(Item {
                product_id,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            });
        }
        Ok(Self {
            customer_id,
            items,
            total_cents: total,
            idempotency_key: IdempotencyKey::parse(&r.idempotency_key)?,
        })
    }
}

/// The page size of a list request: 0 means 50, at most 500, negative is invalid.
pub fn page_size(raw: i32) -> Result<i64, OrderError> {
    match raw {
        0 => Ok(50),
        n if n < 0 => Err(OrderError::InvalidArgument(format!(
            "page_size must not be negative, got {n}"
        ))),
        n => Ok(i64::from(n.min(500))),
    }
}

/// A validated cancellation reason.
pub fn cancel_reason(raw: &str) -> Result<String, OrderError> {
    let reason = raw.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(OrderError::InvalidArgument(format!(
            "reason must be at most {MAX_REASON_CHARS} characters"
        )));
    }
    shop_shared::input::no_nul("reason", reason).map_err(OrderError::InvalidArgument)?;
    Ok(if reason.is_empty() {
        "cancelled by request".to_owned()
    } else {
        reason.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(items: Vec<LineItem>) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_id: CustomerId::new().to_string(),
            items,
            idempotency_key: String::new(),
        }
    }

    fn item(product: &str, quantity: i32, price: i64) -> LineItem {
        LineItem {
            product_id: product.into(),
            quantity,
            unit_price_cents: price,
        }
    }

    #[test]
    fn a_valid_order_gets_its_total() {
        let order = NewOrder::try_from(request(vec![item("a", 2, 150), item("b", 1, 5)])).unwrap();
        assert_eq!(order.total_cents, 305);
        assert_eq!(order.idempotency_key, None);
    }

    #[test]
    fn every_contract_violation_is_invalid_argument() {
        let too_many = (0..101).map(|i| item(&format!("p{i}"), 1, 1)).collect();
        for bad in [
            vec![],
            vec![item("a", 0, 1)],
            vec![item("a", -1, 1)],
            vec![item("a", 1, -1)],
            vec![item("", 1, 1)],
            vec![item("a", 1, 1), item("a", 2, 1)],
            vec![item("a", i32::MAX, i64::MAX)],
            too_many,
        ] {
            let len = bad.len();
            assert!(
                matches!(
                    NewOrder::try_from(request(bad)),
                    Err(OrderError::InvalidArgument(_))
                ),
                "accepted {len} items"
            );
        }
        let mut bad_customer = request(vec![item("a", 1, 1)]);
        bad_customer.customer_id = "x".into();
        assert!(NewOrder::try_from(bad_customer).is_err());
    }

    #[test]
    fn page_sizes_default_cap_and_reject_negatives() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(10_000).unwrap(), 500);
        assert!(page_size(-1).is_err());
    }
}

/// Fuzzing the validation of every order request (proptest): any input never panics, and what
/// is accepted holds no control character and adds up.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,200}", "[a-c \u{0}\n\u{7f}]{0,8}", "[0-9a-f-]{36}"]
    }

    prop_compose! {
        fn item()(product_id in text(), quantity in any::<i32>(), unit_price_cents in any::<i64>()) -> LineItem {
            LineItem { product_id, quantity, unit_price_cents }
        }
    }

    proptest! {
        #[test]
        fn create_order(customer in prop_oneof![text(), Just(CustomerId::new().to_string())], items in proptest::collection::vec(item(), 0..4), key in text()) {
            let request = CreateOrderRequest { customer_id: customer, items, idempotency_key: key };
            if let Ok(order) = NewOrder::try_from(request) {
                let mut total = 0i64;
                for item in &order.items {
                    prop_assert!(!item.product_id.is_empty());
                    prop_assert!(!item.product_id.chars().any(char::is_control));
                    total += i64::from(item.quantity) * item.unit_price_cents;
                }
                prop_assert_eq!(total, order.total_cents);
                prop_assert!(order.idempotency_key.as_ref().is_none_or(|k| !k.as_str().chars().any(char::is_control)));
            }
        }

        #[test]
        fn cancel_reason_and_ids(reason in text(), id in text()) {
            if let Ok(reason) = cancel_reason(&reason) {
                prop_assert!(!reason.contains('\0') && reason.chars().count() <= MAX_REASON_CHARS);
            }
            let _ = shop_shared::ids::OrderId::parse(&id);
            let _ = PageToken::parse(&id);
        }
    }
}
