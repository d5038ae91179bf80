//! How a delivery was settled: the `outcome` label of the consumer's process duration.

/// How a delivery was settled (`outcome` of [`super::PROCESS_DURATION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled and committed: its effects are in the database.
    Applied,
    /// Already in the inbox: skipped and acknowledged.
    Duplicate,
    /// Sent to a retry queue after a transient failure.
    Retried,
    /// Sent to the dead-letter queue (undecodable, permanent failure, last attempt).
    DeadLettered,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}
