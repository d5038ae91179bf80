//! The user service's errors and their one mapping to gRPC status codes (CONTRACT.md).

use tonic::Status;

/// Everything a user RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// No user has that id.
    #[error("user not found")]
    NotFound,
    /// The email address belongs to another user (compared case-insensitively).
    #[error("the email address is already registered")]
    EmailTaken,
    /// Anything else: logged, never shown to the caller.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for UserError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unexpected(e.into())
    }
}

impl From<UserError> for Status {
    fn from(e: UserError) -> Self {
        match e {
            UserError::InvalidArgument(m) => Status::invalid_argument(m),
            UserError::NotFound => Status::not_found("user not found"),
            UserError::EmailTaken => {
                Status::already_exists("the email address is already registered")
            }
            UserError::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "user rpc failed");
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
        assert_eq!(
            Status::from(UserError::InvalidArgument("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(Status::from(UserError::NotFound).code(), Code::NotFound);
        assert_eq!(
            Status::from(UserError::EmailTaken).code(),
            Code::AlreadyExists
        );
        let internal = Status::from(UserError::Unexpected(anyhow::anyhow!(
            "relation users does not exist"
        )));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
