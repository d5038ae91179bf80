//! The user service's errors and their one mapping to gRPC status codes (docs/contract.md).

use shop_shared::error::InfraError;
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
    /// Login: unknown email or wrong password (one answer for both, docs/contract.md).
    #[error("the email or the password is wrong")]
    WrongCredentials,
    /// Login: too many failed logins for this email within the window.
    #[error("too many failed logins for this email: try again in {retry_after_secs} s")]
    TooManyFailedLogins {
        /// Seconds until the oldest counted failure leaves the window.
        retry_after_secs: u64,
    },
    /// CreateUser or Login: the password checks running and waiting are at their bound.
    #[error("too many password checks in progress; retry shortly")]
    TooManyPasswordChecks,
    /// The caller may not act on this user.
    #[error("you may only read or change your own user")]
    PermissionDenied,
    /// The database briefly out of reach, or anything else: shared by every service.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl From<sqlx::Error> for UserError {
    fn from(e: sqlx::Error) -> Self {
        Self::Infra(e.into())
    }
}

impl From<shop_shared::ids::BadId> for UserError {
    fn from(e: shop_shared::ids::BadId) -> Self {
        Self::InvalidArgument(e.to_string())
    }
}

impl From<anyhow::Error> for UserError {
    fn from(e: anyhow::Error) -> Self {
        Self::Infra(e.into())
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
            UserError::WrongCredentials => Status::unauthenticated(e.to_string()),
            UserError::TooManyFailedLogins { .. } | UserError::TooManyPasswordChecks => {
                Status::resource_exhausted(e.to_string())
            }
            UserError::PermissionDenied => Status::permission_denied(e.to_string()),
            UserError::Infra(e) => e.into_status(
                "user",
                "the user service's database is briefly unavailable; retry the call",
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
        assert_eq!(
            Status::from(UserError::InvalidArgument("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(Status::from(UserError::NotFound).code(), Code::NotFound);
        assert_eq!(
            Status::from(UserError::EmailTaken).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            Status::from(UserError::WrongCredentials).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            Status::from(UserError::TooManyFailedLogins {
                retry_after_secs: 3
            })
            .code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(UserError::TooManyPasswordChecks).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(UserError::PermissionDenied).code(),
            Code::PermissionDenied
        );
        let internal = Status::from(UserError::from(anyhow::anyhow!(
            "relation users does not exist"
        )));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(internal.message(), "internal error");
    }
}
