//! An order's status and its transitions: the order service's side of the saga.
//!
//! ```text
//! PENDING ─inventory.reserved─▶ CONFIRMED ─CancelOrder─▶ CANCELLED
//! PENDING ─inventory.reservation_failed─▶ REJECTED
//! PENDING ─CancelOrder─▶ CANCELLED
//! PENDING ─its reservation deadline─▶ CANCELLED
//! ```
//! An inventory answer for an order that is no longer PENDING (cancelled meanwhile, or a
//! repeated answer) changes nothing (docs/contract.md, "Order saga").

/// Where an order stands in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

    /// Whether the saga is over for the order (only a cancellation may still follow CONFIRMED).
    pub fn is_settled(self) -> bool {
        self != Self::Pending
    }
}

/// The inventory's answer about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `inventory.reserved`.
    Reserved,
    /// `inventory.reservation_failed`.
    Failed,
}

/// What an inventory answer does to an order in `status`: the new status (publish
/// `order.confirmed` or `order.rejected`), or `None` when the order is no longer PENDING.
pub fn on_answer(status: OrderStatus, answer: Answer) -> Option<OrderStatus> {
    match (status, answer) {
        (OrderStatus::Pending, Answer::Reserved) => Some(OrderStatus::Confirmed),
        (OrderStatus::Pending, Answer::Failed) => Some(OrderStatus::Rejected),
        (OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Cancelled, _) => None,
    }
}

/// The order's reservation deadline arrived (its scheduled message: the inventory did not
/// answer within `ORDER_RESERVATION_TIMEOUT_S`): CANCELLED (publish `order.cancelled` with the
/// timeout as the reason) if the order is still PENDING, `None` otherwise. The deadline is
/// cancelled when an answer settles the order, but that cancellation may lose the race against
/// its publication, so a deadline for a settled order must change nothing.
pub fn on_deadline(status: OrderStatus) -> Option<OrderStatus> {
    match status {
        OrderStatus::Pending => Some(OrderStatus::Cancelled),
        OrderStatus::Confirmed | OrderStatus::Rejected | OrderStatus::Cancelled => None,
    }
}

/// CancelOrder on an order in `status`: CANCELLED (publish `order.cancelled`), or the status
/// that forbids it (FAILED_PRECONDITION).
pub fn cancel(status: OrderStatus) -> Result<OrderStatus, OrderStatus> {
    match status {
        OrderStatus::Pending | OrderStatus::Confirmed => Ok(OrderStatus::Cancelled),
        OrderStatus::Rejected | OrderStatus::Cancelled => Err(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pending_order_takes_an_answer() {
        assert_eq!(
            on_answer(OrderStatus::Pending, Answer::Reserved),
            Some(OrderStatus::Confirmed)
        );
        assert_eq!(
            on_answer(OrderStatus::Pending, Answer::Failed),
            Some(OrderStatus::Rejected)
        );
        assert_eq!(on_answer(OrderStatus::Cancelled, Answer::Reserved), None);
        assert_eq!(on_answer(OrderStatus::Confirmed, Answer::Reserved), None);
    }

    #[test]
    fn only_a_pending_order_is_cancelled_by_its_deadline() {
        assert_eq!(
            on_deadline(OrderStatus::Pending),
            Some(OrderStatus::Cancelled)
        );
        for settled in [
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ] {
            assert_eq!(on_deadline(settled), None);
        }
    }

    #[test]
    fn pending_and_confirmed_orders_can_be_cancelled() {
        assert!(cancel(OrderStatus::Pending).is_ok());
        assert!(cancel(OrderStatus::Confirmed).is_ok());
        assert_eq!(cancel(OrderStatus::Rejected), Err(OrderStatus::Rejected));
        assert_eq!(cancel(OrderStatus::Cancelled), Err(OrderStatus::Cancelled));
    }

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
