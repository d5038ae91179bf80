//! The order service's errors and their one mapping to gRPC status codes (docs/contract.md).

use shop_shared::error::InfraError;
use tonic::Status;

/// Everything an order RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// No order has that id.
    #[error("order not found")]
    NotFound,
    /// The customer is not known to the order service yet (its `user.created` has not been
    /// applied); retrying later can succeed.
    #[error("customer {0} is not known to the order service yet; retry shortly")]
    UnknownCustomer(String),
    /// The caller may not do this (docs/contract.md's table); the message says what they may do.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The idempotency key was used by this customer for an order with other items.
    #[error("idempotency key {0:?} was used for a different order")]
    IdempotencyKeyReused(String),
    /// The order cannot be cancelled in its current status.
    #[error("order is already {0} and cannot be cancelled")]
    NotCancellable(&'static str),
    /// The database briefly out of reach, or anything else: shared by every service.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl From<sqlx::Error> for OrderError {
    fn from(e: sqlx::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<shop_shared::ids::BadId> for OrderError {
    fn from(e: shop_shared::ids::BadId) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<anyhow::Error> for OrderError {
    fn from(e: anyhow::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::InvalidArgument(m) => Status::invalid_argument(m),
            OrderError::NotFound => Status::not_found("order not found"),
            OrderError::UnknownCustomer(_) => Status::failed_precondition(e.to_string()),
            OrderError::NotCancellable(_) => Status::failed_precondition(e.to_string()),
            OrderError::PermissionDenied(m) => Status::permission_denied(m),
            OrderError::IdempotencyKeyReused(_) => Status::already_exists(e.to_string()),
            OrderError::Infra(e) => e.into_status(
                "order",
                "the order service's database is briefly unavailable; retry the call with the same idempotency key",
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
        let code = |e: OrderError| Status::from(e).code();
        assert_eq!(
            code(OrderError::InvalidArgument("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(code(OrderError::NotFound), Code::NotFound);
        assert_eq!(
            code(OrderError::UnknownCustomer("c".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(OrderError::NotCancellable("REJECTED")),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(OrderError::PermissionDenied("no")),
            Code::PermissionDenied
        );
        assert_eq!(
            code(OrderError::IdempotencyKeyReused("k".into())),
            Code::AlreadyExists
        );
        let lost = OrderError::from(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let status = Status::from(lost);
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "a lost connection is transient"
        );
        assert!(status.message().contains("same idempotency key"));
        assert_eq!(
            code(OrderError::from(sqlx::Error::PoolTimedOut)),
            Code::Unavailable
        );
        assert_eq!(
            code(OrderError::from(sqlx::Error::RowNotFound)),
            Code::Internal
        );
        let internal = Status::from(OrderError::from(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
