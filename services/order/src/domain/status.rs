//! Order statuses: the saga's (`shop_saga::order`, stored as text) and the proto enum.

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
    fn every_status_has_its_own_proto_value() {
        let all = [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ];
        let values: std::collections::HashSet<i32> =
            all.iter().map(|s| to_proto(*s) as i32).collect();
        assert_eq!(values.len(), all.len());
        assert!(!values.contains(&(ProtoStatus::Unspecified as i32)));
    }
}
