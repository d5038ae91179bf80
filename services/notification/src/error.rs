//! The notification service's errors and their one mapping to gRPC status codes.

use tonic::Status;

/// Everything a notification RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller may not read this user's notifications.
    #[error("you may only list your own notifications")]
    PermissionDenied,
    /// The database was briefly out of reach (a lost connection, an exhausted pool): worth
    /// retrying (if it was lost at the commit, the first attempt may have taken effect, which
    /// is what CreateOrder's idempotency key is for).
    #[error("the notification service's database is briefly unavailable; retry the call")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: logged, never shown to the caller.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for NotificationError {
    /// Transient database failures are [`NotificationError::Unavailable`]; the rest are unexpected.
    fn from(e: sqlx::Error) -> Self {
        if shop_shared::db::is_transient(&e) {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e.into())
        }
    }
}

impl From<NotificationError> for Status {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::InvalidArgument(m) => Status::invalid_argument(m),
            NotificationError::PermissionDenied => Status::permission_denied(e.to_string()),
            NotificationError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "rpc answered UNAVAILABLE: transient database failure");
                Status::unavailable(
                    "the notification service's database is briefly unavailable; retry the call",
                )
            }
            NotificationError::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "notification rpc failed");
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
        let invalid = Status::from(NotificationError::InvalidArgument("x".into()));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let internal = Status::from(NotificationError::Unexpected(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
