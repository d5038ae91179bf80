//! The inventory service's use cases, one function per RPC: authorize, validate, write —
//! with no gRPC in sight (`grpc.rs` only converts). Only staff set stock levels; anyone with
//! a valid token may read one (docs/contract.md).

use shop_shared::auth::Caller;
use sqlx::PgPool;

use crate::InventoryError;
use crate::domain::{ProductId, StockAdjustment};
use crate::repository::{self, StockRow};

/// What the use cases work with.
#[derive(Debug, Clone)]
pub(crate) struct Stock {
    pub(crate) pool: PgPool,
}

impl Stock {
    /// AdjustStock: staff only. A product comes into being with its first positive
    /// adjustment; the database refuses a level below zero.
    pub(crate) async fn adjust(
        &self,
        caller: &Caller,
        change: StockAdjustment,
    ) -> Result<StockRow, InventoryError> {
        if !caller.is_staff() {
            return Err(InventoryError::PermissionDenied);
        }
        let mut conn = self.pool.acquire().await?;
        let product = &change.product_id;
        let existing = repository::adjust_existing(&mut conn, product, change.delta)
            .await
            .map_err(adjust_error)?;
        match existing {
            Some(row) => Ok(row),
            None if change.delta > 0 => {
                repository::insert_product(&mut conn, product, change.delta)
                    .await
                    .map_err(adjust_error)
            }
            None => Err(InventoryError::WouldGoNegative),
        }
    }

    /// GetStock: any authenticated caller.
    pub(crate) async fn get(
        &self,
        _caller: &Caller,
        product_id: &str,
    ) -> Result<StockRow, InventoryError> {
        // docs/contract.md gives GetStock one error, NOT_FOUND: an empty, too long or unknown
        // id has no stock.
        let product_id = ProductId::lookup(product_id)?.ok_or(InventoryError::NotFound)?;
        let mut conn = self.pool.acquire().await?;
        repository::find_stock(&mut conn, &product_id)
            .await?
            .ok_or(InventoryError::NotFound)
    }
}

fn adjust_error(e: sqlx::Error) -> InventoryError {
    match e.as_database_error().and_then(|d| d.code()).as_deref() {
        // check_violation: the CHECK (available >= 0) refused the result.
        Some("23514") => InventoryError::WouldGoNegative,
        // numeric_value_out_of_range: the sum overflows a 64-bit count.
        Some("22003") => {
            InventoryError::InvalidArgument("delta takes the stock beyond a 64-bit count".into())
        }
        _ => InventoryError::from(e),
    }
}
