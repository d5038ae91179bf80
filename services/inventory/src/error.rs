//! The inventory service's errors and their one mapping to gRPC status codes (docs/contract.md).

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
    /// The database was briefly out of reach (a lost connection, an exhausted pool): worth
    /// retrying (if it was lost at the commit, the first attempt may have taken effect, which
    /// is what CreateOrder's idempotency key is for).
    #[error("the inventory service's database is briefly unavailable; retry the call")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: logged, never shown to the caller.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for InventoryError {
    /// Transient database failures are [`InventoryError::Unavailable`]; the rest are unexpected.
    fn from(e: sqlx::Error) -> Self {
        if shop_shared::db::is_transient(&e) {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e.into())
        }
    }
}

impl From<InventoryError> for Status {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::InvalidArgument(m) => Status::invalid_argument(m),
            InventoryError::NotFound => Status::not_found(e.to_string()),
            InventoryError::WouldGoNegative => Status::failed_precondition(e.to_string()),
            InventoryError::PermissionDenied => Status::permission_denied(e.to_string()),
            InventoryError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "rpc answered UNAVAILABLE: transient database failure");
                Status::unavailable(
                    "the inventory service's database is briefly unavailable; retry the call",
                )
            }
            InventoryError::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "inventory rpc failed");
                Status::internal("internal error")
            }
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
        let internal = Status::from(InventoryError::Unexpected(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
