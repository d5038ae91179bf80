//! The inventory service's errors and their one mapping to gRPC status codes (docs/contract.md).

use shop_shared::error::InfraError;
use tonic::Status;

/// Everything an inventory RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// No stock is recorded for that product.
    #[error("no stock is recorded for this product")]
    NotFound,
    /// Only staff may set stock levels.
    #[error("only staff may adjust stock")]
    PermissionDenied,
    /// The change would take the available stock below zero.
    #[error("the adjustment would take available stock below zero")]
    WouldGoNegative,
    /// The database briefly out of reach, or anything else: shared by every service.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl From<sqlx::Error> for InventoryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<anyhow::Error> for InventoryError {
    fn from(e: anyhow::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<InventoryError> for Status {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::InvalidArgument(m) => Status::invalid_argument(m),
            InventoryError::NotFound => Status::not_found(e.to_string()),
            InventoryError::WouldGoNegative => Status::failed_precondition(e.to_string()),
            InventoryError::PermissionDenied => Status::permission_denied(e.to_string()),
            InventoryError::Infra(e) => e.into_status(
                "inventory",
                "the inventory service's database is briefly unavailable; retry the call",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_maps_to_its_contract_code_and_hides_internals() {
        let code = |e: InventoryError| Status::from(e).code();
        assert_eq!(
            code(InventoryError::InvalidArgument("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(code(InventoryError::NotFound), Code::NotFound);
        assert_eq!(
            code(InventoryError::WouldGoNegative),
            Code::FailedPrecondition
        );
        let internal = Status::from(InventoryError::from(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
