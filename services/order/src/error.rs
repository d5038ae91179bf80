//! The order service's errors and their one mapping to gRPC status codes (docs/contract.md).

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
    /// The database was briefly out of reach (a lost connection, an exhausted pool): worth
    /// retrying (if it was lost at the commit, the first attempt may have taken effect, which
    /// is what CreateOrder's idempotency key is for).
    #[error(
        "the order service's database is briefly unavailable; retry the call with the same idempotency key"
    )]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: logged, never shown to the caller.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OrderError {
    /// Transient database failures are [`OrderError::Unavailable`]; the rest are unexpected.
    fn from(e: sqlx::Error) -> Self {
        if shop_shared::db::is_transient(&e) {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e.into())
        }
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
            OrderError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "rpc answered UNAVAILABLE: transient database failure");
                Status::unavailable(
                    "the order service's database is briefly unavailable; retry the call with the same idempotency key",
                )
            }
            OrderError::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "order rpc failed");
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
        let internal = Status::from(OrderError::Unexpected(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
