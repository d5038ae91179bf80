//! Order statuses as stored (text) and as sent (the proto enum).

use shop_proto::order::v1::OrderStatus as ProtoStatus;

/// Where an order stands in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Waiting for the inventory.
    Pending,
    /// Every item reserved.
    Confirmed,
    /// Not every item could be reserved.
    Rejected,
    /// Cancelled on request.
    Cancelled,
}

impl OrderStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Reads the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(Self::Pending),
            "CONFIRMED" => Some(Self::Confirmed),
            "REJECTED" => Some(Self::Rejected),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// The proto enum.
    pub fn to_proto(self) -> ProtoStatus {
        match self {
            Self::Pending => ProtoStatus::Pending,
            Self::Confirmed => ProtoStatus::Confirmed,
            Self::Rejected => ProtoStatus::Rejected,
            Self::Cancelled => ProtoStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_round_trips() {
        for s in [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("pending"), None);
    }
}
