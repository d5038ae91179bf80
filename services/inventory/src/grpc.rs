//! The tonic `InventoryService`: request → domain → repository → response.

use shop_proto::inventory::v1::inventory_service_server::InventoryService;
use shop_proto::inventory::v1::{
    AdjustStockRequest, AdjustStockResponse, GetStockRequest, GetStockResponse, StockLevel,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::InventoryError;
use crate::domain::StockAdjustment;
use crate::repository::{self, StockRow};

/// The gRPC face of the inventory service.
#[derive(Debug, Clone)]
pub(crate) struct InventoryGrpc {
    pub(crate) pool: PgPool,
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<AdjustStockResponse>, Status> {
        let change = StockAdjustment::try_from(request.into_inner())?;
        let mut conn = self.pool.acquire().await.map_err(InventoryError::from)?;
        let product = change.product_id.as_str();
        let existing = repository::adjust_existing(&mut conn, product, change.delta)
            .await
            .map_err(adjust_error)?;
        let row = match existing {
            Some(row) => row,
            // A product comes into being with its first positive adjustment.
            None if change.delta > 0 => {
                repository::insert_product(&mut conn, product, change.delta)
                    .await
                    .map_err(adjust_error)?
            }
            None => return Err(InventoryError::WouldGoNegative.into()),
        };
        Ok(Response::new(AdjustStockResponse {
            stock: Some(to_proto(row)),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        // CONTRACT.md gives GetStock one error, NOT_FOUND: an empty or unknown id has no stock.
        let product_id = request.into_inner().product_id;
        let mut conn = self.pool.acquire().await.map_err(InventoryError::from)?;
        let row = repository::find_stock(&mut conn, product_id.trim())
            .await
            .map_err(InventoryError::from)?
            .ok_or(InventoryError::NotFound)?;
        Ok(Response::new(GetStockResponse {
            stock: Some(to_proto(row)),
        }))
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

fn to_proto(row: StockRow) -> StockLevel {
    StockLevel {
        product_id: row.product_id,
        available: row.available,
        reserved: row.reserved,
    }
}
