//! Order statuses as stored (text) and as sent (the proto enum).

use shop_proto::order::v1::OrderStatus as ProtoStatus;

pub use shop_saga::order::OrderStatus;

/// The proto enum of a status.
pub fn to_proto(status: OrderStatus) -> ProtoStatus {
    match status {
        OrderStatus::Pending => ProtoStatus::Pending,
        OrderStatus::Confirmed => ProtoStatus::Confirmed,
        OrderStatus::Rejected => ProtoStatus::Rejected,
        OrderStatus::Cancelled => ProtoStatus::Cancelled,
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
            assert_ne!(to_proto(s), ProtoStatus::Unspecified);
        }
    }
}
