//! The inventory's decisions: reserve every item of an order or none; release what an order
//! holds when it is cancelled, in either arrival order.
//!
//! A [`Ledger`] holds what the inventory knows of the products and orders that some messages
//! touch: the stock rows and reservation records the service loaded (locked) for them. Each
//! message is one call ([`Ledger::order_created`], [`Ledger::order_cancelled`]) that changes
//! the ledger and says what to publish; [`Ledger::changes`] is what to write back. A batch of
//! messages is the same calls in delivery order on one ledger, so it has exactly the effects of
//! applying them one at a time (docs/contract.md, "Batches are invisible"): nothing is decided
//! for a message before its turn.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Where an order stands in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReservationStatus {
    /// Every item is reserved; the record holds what.
    Reserved,
    /// Nothing was reserved (a shortage).
    Failed,
    /// Was reserved, then the order was cancelled: the units went back.
    Released,
    /// The cancellation came first (a tombstone): a late `order.created` reserves nothing.
    Cancelled,
}

impl ReservationStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "RESERVED",
            Self::Failed => "FAILED",
            Self::Released => "RELEASED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Reads the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RESERVED" => Some(Self::Reserved),
            "FAILED" => Some(Self::Failed),
            "RELEASED" => Some(Self::Released),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// An order's reservation record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// Where the order stands.
    pub status: ReservationStatus,
    /// Units per product: held while RESERVED, what was held once RELEASED, empty otherwise.
    pub items: Vec<(String, i64)>,
}

/// A product's stock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stock {
    /// Units free to reserve.
    pub available: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

/// The units an order wants, per product in product order; never empty, every count positive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted(BTreeMap<String, i64>);

/// Why an `order.created` cannot be decided on (its handler dead-letters it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOrder(pub String);

impl Wanted {
    /// Sums an order's lines per product; an empty product id, a count of zero or less, or no
    /// line at all is invalid.
    pub fn from_lines<'a>(
        order_id: &str,
        lines: impl IntoIterator<Item = (&'a str, i64)>,
    ) -> Result<Self, InvalidOrder> {
        let mut wanted = BTreeMap::new();
        for (product_id, quantity) in lines {
            if product_id.is_empty() || quantity <= 0 {
                return Err(InvalidOrder(format!(
                    "order {order_id} has an invalid item {product_id:?} × {quantity}"
                )));
            }
            *wanted.entry(product_id.to_owned()).or_insert(0) += quantity;
        }
        if wanted.is_empty() {
            return Err(InvalidOrder(format!("order {order_id} has no items")));
        }
        Ok(Self(wanted))
    }

    /// The products wanted, in product order.
    pub fn products(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// (product, units) in product order.
    pub fn lines(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(p, q)| (p.as_str(), *q))
    }
}

/// A product an order could not get enough of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shortage {
    /// The product.
    pub product_id: String,
    /// Units the order wants.
    pub requested: i64,
    /// Units that were available.
    pub available: i64,
}

/// What an `order.created` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Every line reserved: publish `inventory.reserved` with these units.
    Reserved(Vec<(String, i64)>),
    /// Nothing reserved: publish `inventory.reservation_failed` with the shortages.
    Failed(Vec<Shortage>),
    /// The order was decided before (a repeated `order.created` under a new id): nothing.
    AlreadyDecided(ReservationStatus),
    /// The cancellation came first: nothing is reserved and nothing published.
    CancelledFirst,
}

/// What an `order.cancelled` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The order's units went back: publish `inventory.released`.
    Released(Vec<(String, i64)>),
    /// The cancellation came first: a tombstone is left, nothing published.
    Tombstone,
    /// Nothing held (failed, already released or cancelled): nothing.
    NothingHeld(ReservationStatus),
}

/// The rows to write back after some decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// (product, change of available units); reserved changes by the opposite. Product order.
    pub stock: Vec<(String, i64)>,
    /// Records that did not exist when loaded, in order-id order: insert them.
    pub inserted: Vec<(Uuid, Reservation)>,
    /// Records that existed and changed, in order-id order: update them.
    pub updated: Vec<(Uuid, Reservation)>,
}

impl Changes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.stock.is_empty() && self.inserted.is_empty() && self.updated.is_empty()
    }
}

/// The stock rows and reservation records some messages touch, as loaded, and the decisions
/// taken on them since.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    stock: BTreeMap<String, Stock>,
    loaded_stock: BTreeMap<String, Stock>,
    reservations: BTreeMap<Uuid, Reservation>,
    loaded: BTreeSet<Uuid>,
    changed: BTreeSet<Uuid>,
}

impl Ledger {
    /// A ledger over the loaded rows. A product that is not among `stock` does not exist: it
    /// has nothing available. An order not among `reservations` has no record yet.
    pub fn new(
        stock: impl IntoIterator<Item = (String, Stock)>,
        reservations: impl IntoIterator<Item = (Uuid, Reservation)>,
    ) -> Self {
        let stock: BTreeMap<String, Stock> = stock.into_iter().collect();
        let reservations: BTreeMap<Uuid, Reservation> = reservations.into_iter().collect();
        Self {
            loaded_stock: stock.clone(),
            loaded: reservations.keys().copied().collect(),
            stock,
            reservations,
            changed: BTreeSet::new(),
        }
    }

    /// `order.created`: reserve every line or none, unless the order was decided before or
    /// cancelled first.
    pub fn order_created(&mut self, order_id: Uuid, wanted: &Wanted) -> Reserve {
        if let Some(record) = self.reservations.get(&order_id) {
            return match record.status {
                ReservationStatus::Cancelled => Reserve::CancelledFirst,
                status => Reserve::AlreadyDecided(status),
            };
        }
        let shortages: Vec<Shortage> = wanted
            .lines()
            .filter_map(|(product, requested)| {
                let available = self.stock.get(product).map_or(0, |s| s.available);
                (available < requested).then(|| Shortage {
                    product_id: product.to_owned(),
                    requested,
                    available,
                })
            })
            .collect();
        if !shortages.is_empty() {
            self.record(order_id, ReservationStatus::Failed, Vec::new());
            return Reserve::Failed(shortages);
        }
        // All or nothing: every line is available, so every line is reserved.
        let items: Vec<(String, i64)> = wanted.lines().map(|(p, q)| (p.to_owned(), q)).collect();
        for (product, quantity) in &items {
            let stock = self.stock.entry(product.clone()).or_default();
            stock.available -= quantity;
            stock.reserved += quantity;
        }
        self.record(order_id, ReservationStatus::Reserved, items.clone());
        Reserve::Reserved(items)
    }

    /// `order.cancelled`: give back what the order holds, or leave a tombstone when the
    /// cancellation comes first.
    pub fn order_cancelled(&mut self, order_id: Uuid) -> Release {
        let Some(record) = self.reservations.get(&order_id) else {
            self.record(order_id, ReservationStatus::Cancelled, Vec::new());
            return Release::Tombstone;
        };
        if record.status != ReservationStatus::Reserved {
            return Release::NothingHeld(record.status);
        }
        let items = record.items.clone();
        for (product, quantity) in &items {
            let stock = self.stock.entry(product.clone()).or_default();
            stock.available += quantity;
            stock.reserved -= quantity;
        }
        self.record(order_id, ReservationStatus::Released, items.clone());
        Release::Released(items)
    }

    fn record(&mut self, order_id: Uuid, status: ReservationStatus, items: Vec<(String, i64)>) {
        self.reservations
            .insert(order_id, Reservation { status, items });
        self.changed.insert(order_id);
    }

    /// A product's stock as decided so far (`None`: not loaded, so it does not exist).
    pub fn stock(&self, product_id: &str) -> Option<Stock> {
        self.stock.get(product_id).copied()
    }

    /// An order's record as decided so far.
    pub fn reservation(&self, order_id: Uuid) -> Option<&Reservation> {
        self.reservations.get(&order_id)
    }

    /// What to write back: the net stock change per product and every record that changed.
    pub fn changes(&self) -> Changes {
        let stock = self
            .stock
            .iter()
            .filter_map(|(product, now)| {
                let before = self.loaded_stock.get(product).copied().unwrap_or_default();
                let delta = now.available - before.available;
                (delta != 0).then(|| (product.clone(), delta))
            })
            .collect();
        let mut changes = Changes {
            stock,
            ..Changes::default()
        };
        for order_id in &self.changed {
            let record = (*order_id, self.reservations[order_id].clone());
            if self.loaded.contains(order_id) {
                changes.updated.push(record);
            } else {
                changes.inserted.push(record);
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn wanted(lines: &[(&str, i64)]) -> Wanted {
        Wanted::from_lines("o", lines.iter().copied()).unwrap()
    }

    fn ledger(stock: &[(&str, i64)]) -> Ledger {
        Ledger::new(
            stock.iter().map(|(p, n)| {
                (
                    (*p).to_owned(),
                    Stock {
                        available: *n,
                        reserved: 0,
                    },
                )
            }),
            [],
        )
    }

    #[test]
    fn wanted_units_are_summed_per_product_and_invalid_lines_refused() {
        let w = wanted(&[("b", 1), ("a", 2), ("b", 3)]);
        assert_eq!(w.lines().collect::<Vec<_>>(), [("a", 2), ("b", 4)]);
        assert!(Wanted::from_lines("o", [("a", 0)]).is_err());
        assert!(Wanted::from_lines("o", [("", 1)]).is_err());
        assert!(Wanted::from_lines("o", []).is_err());
    }

    #[test]
    fn an_order_gets_every_line_or_none() {
        let mut l = ledger(&[("a", 2), ("b", 1)]);
        assert_eq!(
            l.order_created(id(1), &wanted(&[("a", 1), ("b", 2)])),
            Reserve::Failed(vec![Shortage {
                product_id: "b".into(),
                requested: 2,
                available: 1
            }])
        );
        assert_eq!(
            l.stock("a").unwrap().available,
            2,
            "nothing taken on failure"
        );
        assert!(matches!(
            l.order_created(id(2), &wanted(&[("a", 2), ("b", 1)])),
            Reserve::Reserved(_)
        ));
        assert_eq!(
            l.changes().stock,
            [("a".to_owned(), -2), ("b".to_owned(), -1)]
        );
    }

    #[test]
    fn a_cancellation_first_leaves_a_tombstone_and_the_late_order_reserves_nothing() {
        let mut l = ledger(&[("a", 1)]);
        assert_eq!(l.order_cancelled(id(1)), Release::Tombstone);
        assert_eq!(
            l.order_created(id(1), &wanted(&[("a", 1)])),
            Reserve::CancelledFirst
        );
        assert_eq!(l.stock("a").unwrap().available, 1);
    }

    #[test]
    fn the_oversell_batch_of_issue_27_reserves_nothing_it_should_not() {
        // order.cancelled(X), order.created(Y: 2), order.created(X: 1) with 1 unit in stock.
        let (x, y) = (id(1), id(2));
        let mut l = ledger(&[("a", 1)]);
        assert_eq!(l.order_cancelled(x), Release::Tombstone);
        assert!(matches!(
            l.order_created(y, &wanted(&[("a", 2)])),
            Reserve::Failed(_)
        ));
        assert_eq!(
            l.order_created(x, &wanted(&[("a", 1)])),
            Reserve::CancelledFirst
        );
        assert_eq!(
            l.stock("a"),
            Some(Stock {
                available: 1,
                reserved: 0
            })
        );
        assert!(l.changes().stock.is_empty());
    }

    #[test]
    fn release_gives_back_what_was_held_once() {
        let mut l = ledger(&[("a", 3)]);
        l.order_created(id(1), &wanted(&[("a", 2)]));
        assert_eq!(
            l.order_cancelled(id(1)),
            Release::Released(vec![("a".into(), 2)])
        );
        assert_eq!(
            l.order_cancelled(id(1)),
            Release::NothingHeld(ReservationStatus::Released)
        );
        assert_eq!(l.stock("a").unwrap().available, 3);
        let changes = l.changes();
        assert!(changes.stock.is_empty());
        assert_eq!(changes.inserted.len(), 1);
    }

    #[test]
    fn stored_statuses_round_trip() {
        for s in [
            ReservationStatus::Reserved,
            ReservationStatus::Failed,
            ReservationStatus::Released,
            ReservationStatus::Cancelled,
        ] {
            assert_eq!(ReservationStatus::parse(s.as_str()), Some(s));
        }
    }
}
