//! The tonic `InventoryService`: proto → domain, the use case in [`crate::stock`], domain →
//! proto.

use shop_proto::inventory::v1::inventory_service_server::InventoryService;
use shop_proto::inventory::v1::{
    AdjustStockRequest, AdjustStockResponse, GetStockRequest, GetStockResponse, StockLevel,
};
use shop_shared::auth::caller;
use tonic::{Request, Response, Status};

use crate::domain::StockAdjustment;
use crate::repository::StockRow;
use crate::stock::Stock;

/// The gRPC face of the inventory service.
#[derive(Debug, Clone)]
pub(crate) struct InventoryGrpc {
    pub(crate) stock: Stock,
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn adjust_stock(
        &self,
        request: Request<AdjustStockRequest>,
    ) -> Result<Response<AdjustStockResponse>, Status> {
        let caller = caller(&request)?;
        let change = StockAdjustment::try_from(request.into_inner())?;
        let row = self.stock.adjust(&caller, change).await?;
        Ok(Response::new(AdjustStockResponse {
            stock: Some(to_proto(row)),
        }))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let caller = caller(&request)?;
        let row = self
            .stock
            .get(&caller, &request.get_ref().product_id)
            .await?;
        Ok(Response::new(GetStockResponse {
            stock: Some(to_proto(row)),
        }))
    }
}

fn to_proto(row: StockRow) -> StockLevel {
    StockLevel {
        product_id: row.product_id.into(),
        available: row.available,
        reserved: row.reserved,
    }
}
