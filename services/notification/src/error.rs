//! The notification service's errors and their one mapping to gRPC status codes.

use shop_shared::error::InfraError;
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
    /// The database briefly out of reach, or anything else: shared by every service.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl From<sqlx::Error> for NotificationError {
    fn from(e: sqlx::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<shop_shared::ids::BadId> for NotificationError {
    fn from(e: shop_shared::ids::BadId) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<anyhow::Error> for NotificationError {
    fn from(e: anyhow::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<NotificationError> for Status {
    fn from(e: NotificationError) -> Self {
        match e {
            NotificationError::InvalidArgument(m) => Status::invalid_argument(m),
            NotificationError::PermissionDenied => Status::permission_denied(e.to_string()),
            NotificationError::Infra(e) => e.into_status(
                "notification",
                "the notification service's database is briefly unavailable; retry the call",
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
        let invalid = Status::from(NotificationError::InvalidArgument("x".into()));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let internal = Status::from(NotificationError::from(anyhow::anyhow!("db text")));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
