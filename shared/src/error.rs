//! The failures every service's RPCs share, in one type: the database briefly out of reach
//! (answered UNAVAILABLE: the caller may retry) or anything else (answered INTERNAL, logged,
//! never shown). Each service's error enum keeps only its own variants beside
//! `Infra(#[from] InfraError)`, and maps this one through [`InfraError::into_status`].

use tonic::Status;

/// A failure of the infrastructure under an RPC, not of the request.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The database was briefly out of reach (a lost connection, an exhausted pool, a
    /// serialization failure: [`crate::db::is_transient`]): worth retrying.
    #[error("the database is briefly unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: logged, never shown to the caller.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for InfraError {
    /// Transient database failures are [`InfraError::Unavailable`]; the rest are unexpected.
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_transient(&e) {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(e.into())
        }
    }
}

impl InfraError {
    /// The gRPC answer: UNAVAILABLE saying `unavailable` (which says how to retry), or
    /// INTERNAL "internal error". Either is logged with its cause, which the caller never sees.
    pub fn into_status(self, service: &str, unavailable: &str) -> Status {
        match self {
            Self::Unavailable(cause) => {
                tracing::warn!(error = %cause, "rpc answered UNAVAILABLE: transient database failure");
                Status::unavailable(unavailable)
            }
            Self::Unexpected(e) => {
                tracing::error!(error.cause_chain = ?e, "{service} rpc failed");
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
    fn a_lost_connection_is_unavailable_and_the_rest_internal_without_its_text() {
        let lost = InfraError::from(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let status = lost.into_status("test", "retry the call");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "retry the call");
        let status = InfraError::from(sqlx::Error::PoolTimedOut).into_status("test", "retry");
        assert_eq!(status.code(), Code::Unavailable);
        let internal = InfraError::from(sqlx::Error::RowNotFound).into_status("test", "retry");
        assert_eq!(internal.code(), Code::Internal);
        let internal = InfraError::Unexpected(anyhow::anyhow!("db text")).into_status("t", "r");
        assert_eq!(internal.message(), "internal error");
    }
}
