//! Where a notification's delivery stands, as stored (`notifications.delivery_status`) and as
//! ListNotifications answers it.

use shop_proto::notification::v1::NotificationDelivery;

/// A notification's delivery status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Recorded, waiting for the dispatcher (or for its next attempt).
    Pending,
    /// The mail server took it.
    Sent,
    /// Refused for good, or still failing after the last attempt.
    Failed,
    /// No mail server configured: recorded only.
    Recorded,
}

impl DeliveryStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Failed => "FAILED",
            Self::Recorded => "RECORDED",
        }
    }

    /// The status of stored text (the column's CHECK allows no other).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "SENT" => Some(Self::Sent),
            "FAILED" => Some(Self::Failed),
            "RECORDED" => Some(Self::Recorded),
            _ => None,
        }
    }
}

// The `delivery_status` text column.
shop_saga::stored_as_text!(DeliveryStatus);

impl From<DeliveryStatus> for NotificationDelivery {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Sent => Self::Sent,
            DeliveryStatus::Failed => Self::Failed,
            DeliveryStatus::Recorded => Self::Recorded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_text() {
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Sent,
            DeliveryStatus::Failed,
            DeliveryStatus::Recorded,
        ] {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("sent"), None);
    }
}
