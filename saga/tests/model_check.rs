//! The exhaustive model check of the saga (docs/saga-check.md).
//!
//! An explicit-state, breadth-first search over every state the order saga can reach, built
//! from the decision functions the services run (`shop_saga::{order, inventory, contact}`), not
//! from a copy of them. Only the I/O around them is modelled: the databases are maps, the
//! outboxes and queues are multisets, the inbox is a set of message ids.
//!
//! Scope: three orders over two products with little stock (so shortages happen); the customer
//! places each order and may cancel it at any point; each relay publishes its staged messages
//! in any order and may publish any of them twice (a crash before it marked the row, or two
//! relays); a consumer takes any of its queued messages, in any order, as a batch of one to
//! three; it commits and acknowledges, or commits and crashes before the ack (the batch is
//! redelivered). A crash before the commit rolls the batch back: the state is unchanged, so it
//! is no transition here (the simulation on the real code injects it).
//!
//! Invariants, in every state: stock never negative; no unit created or lost; `reserved` is
//! what RESERVED records hold; a CONFIRMED order holds exactly its items; no message's effect
//! happens twice; no `inventory.reserved` for an order whose cancellation the inventory had
//! applied. Once every message is delivered: every order is settled, holds units only if
//! CONFIRMED, and the order and inventory services agree on it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use chrono::DateTime;
use shop_saga::contact::{Contact, ContactChange};
use shop_saga::inventory::{
    Ledger, Release, Reservation, ReservationStatus, Reserve, Stock, Wanted,
};
use shop_saga::order::{self, Answer, OrderStatus};
use uuid::Uuid;

/// The longest batch a consumer takes.
const MAX_BATCH: usize = 3;
/// How many times one message may be delivered to its consumer (published twice by its relays,
/// or redelivered after a crash between commit and ack).
const MAX_DELIVERIES: u8 = 2;
/// How many extra deliveries one run may have, over all its messages: any message may arrive
/// twice, and so may any two (every pair is explored). Bounded so the search stays in minutes.
const DUPLICATES: u8 = 2;
/// How many of the orders have a reservation deadline (the first ones): each deadline's
/// message may arrive at any point after its order was placed (its consumer takes queued
/// messages in any order), including after the order was settled: the model never lets the
/// cancellation of a deadline win its race against the publication, a superset of what
/// happens. One deadline keeps the search in seconds; every interleaving of it with the other
/// two orders' messages is explored.
const DEADLINES: u8 = 1;
/// The stock put in.
const STOCK: [(&str, i64); 2] = [("a", 2), ("b", 1)];
/// The orders' lines: together they want more than there is.
const ORDERS: [&[(&str, i64)]; 3] = [&[("a", 1), ("b", 1)], &[("a", 2)], &[("b", 1)]];
const N: usize = ORDERS.len();

/// A message: its kind and the order it is about. A message id names one (kind, order): each
/// is staged at most once, or an effect happened twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Msg {
    Created(u8),
    /// The order's reservation deadline (a scheduled message to the order service itself).
    Deadline(u8),
    Cancelled(u8),
    Reserved(u8),
    Failed(u8),
    Released(u8),
    Confirmed(u8),
    Rejected(u8),
}

impl Msg {
    fn order(self) -> u8 {
        match self {
            Self::Created(o)
            | Self::Deadline(o)
            | Self::Cancelled(o)
            | Self::Reserved(o)
            | Self::Failed(o)
            | Self::Released(o)
            | Self::Confirmed(o)
            | Self::Rejected(o) => o,
        }
    }

    /// Which modelled queue the message goes to (notification-only events go to none).
    fn queue(self) -> Option<Service> {
        match self {
            Self::Created(_) | Self::Cancelled(_) => Some(Service::Inventory),
            Self::Reserved(_) | Self::Failed(_) | Self::Deadline(_) => Some(Service::Order),
            Self::Released(_) | Self::Confirmed(_) | Self::Rejected(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Service {
    Order,
    Inventory,
}

fn order_uuid(o: u8) -> Uuid {
    Uuid::from_u128(u128::from(o) + 1)
}

fn wanted(o: u8) -> Wanted {
    Wanted::from_lines(&o.to_string(), ORDERS[o as usize].iter().copied())
        .expect("the model's orders are valid")
}

/// One service's messaging: its inbox, what it staged, and its consumer's queue.
///
/// A staged message goes straight into its consumer's queue: a consumer may take any queued
/// message in any order, so a message queued early and taken late covers every later time
/// its relay could have published it, and two relays publishing out of order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Node {
    inbox: BTreeSet<Msg>,
    staged: BTreeSet<Msg>,
    /// The consumer's queue, a multiset (sorted).
    queue: Vec<Msg>,
    /// How many times each message was delivered to this consumer so far.
    deliveries: BTreeMap<Msg, u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    orders: [Option<OrderStatus>; N],
    order: Node,
    stock: BTreeMap<String, Stock>,
    reservations: BTreeMap<Uuid, Reservation>,
    inventory: Node,
    /// Extra deliveries left in this run.
    duplicates: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Place(u8),
    Cancel(u8),
    Duplicate(Service, Msg),
    Consume {
        service: Service,
        batch: [Option<Msg>; MAX_BATCH],
        acked: bool,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Place(o) => write!(f, "CreateOrder(O{o})"),
            Self::Cancel(o) => write!(f, "CancelOrder(O{o})"),
            Self::Duplicate(s, m) => write!(f, "{m:?} delivered to the {s:?} service again"),
            Self::Consume {
                service,
                batch,
                acked,
            } => {
                let batch: Vec<String> = batch.iter().flatten().map(|m| format!("{m:?}")).collect();
                let end = if *acked {
                    "commit, ack"
                } else {
                    "commit, crash before the ack"
                };
                write!(f, "{service:?} applies batch [{}]; {end}", batch.join(", "))
            }
        }
    }
}

fn initial() -> State {
    State {
        orders: [None; N],
        order: Node::default(),
        stock: STOCK
            .iter()
            .map(|(p, n)| {
                (
                    (*p).to_owned(),
                    Stock {
                        available: *n,
                        reserved: 0,
                    },
                )
            })
            .collect(),
        reservations: BTreeMap::new(),
        inventory: Node::default(),
        duplicates: DUPLICATES,
    }
}

/// `from` stages `msg` (its relay delivers it to its consumer); staging one message twice is
/// an effect happening twice.
fn stage(s: &mut State, from: Service, msg: Msg) -> Result<(), String> {
    if !node(s, from).staged.insert(msg) {
        return Err(format!(
            "{msg:?} was staged twice: an effect happened twice"
        ));
    }
    if let Some(to) = msg.queue() {
        let to = node(s, to);
        to.queue.push(msg);
        to.queue.sort_unstable();
        to.deliveries.insert(msg, 1);
    }
    Ok(())
}

/// The inventory's consumer applies `batch` in one transaction: the inbox, then each fresh
/// message through the service's decisions on one ledger, then the ledger's changes written.
fn inventory_batch(s: &mut State, batch: &[Msg]) -> Result<(), String> {
    let mut ledger = Ledger::new(s.stock.clone(), s.reservations.clone());
    for &msg in batch {
        if !s.inventory.inbox.insert(msg) {
            continue; // applied before, or earlier in this batch: a duplicate
        }
        let o = msg.order();
        let id = order_uuid(o);
        match msg {
            Msg::Created(_) => match ledger.order_created(id, &wanted(o)) {
                Reserve::Reserved(_) => {
                    if s.inventory.inbox.contains(&Msg::Cancelled(o)) {
                        return Err(format!(
                            "inventory.reserved for O{o}, whose order.cancelled the inventory \
                             had applied"
                        ));
                    }
                    stage(s, Service::Inventory, Msg::Reserved(o))?;
                }
                Reserve::Failed(_) => stage(s, Service::Inventory, Msg::Failed(o))?,
                Reserve::AlreadyDecided(_) | Reserve::CancelledFirst => {}
            },
            Msg::Cancelled(_) => match ledger.order_cancelled(id) {
                Release::Released(_) => stage(s, Service::Inventory, Msg::Released(o))?,
                Release::Tombstone | Release::NothingHeld(_) => {}
            },
            other => return Err(format!("the inventory does not consume {other:?}")),
        }
    }
    // Store: write back exactly what the ledger says changed, as the repository does.
    let changes = ledger.changes();
    for (product, delta) in changes.stock {
        let stock = s.stock.entry(product).or_default();
        stock.available += delta;
        stock.reserved -= delta;
    }
    for (id, record) in changes.inserted {
        if s.reservations.insert(id, record).is_some() {
            return Err(format!("record {id} inserted twice"));
        }
    }
    for (id, record) in changes.updated {
        s.reservations.insert(id, record);
    }
    Ok(())
}

/// The order service's consumer applies `batch` in one transaction.
fn order_batch(s: &mut State, batch: &[Msg]) -> Result<(), String> {
    for &msg in batch {
        if !s.order.inbox.insert(msg) {
            continue;
        }
        let o = msg.order();
        let Some(status) = s.orders[o as usize] else {
            return Err(format!("{msg:?} about O{o}, which was never placed"));
        };
        let answer = match msg {
            Msg::Reserved(_) => Answer::Reserved,
            Msg::Failed(_) => Answer::Failed,
            Msg::Deadline(_) => {
                if let Some(cancelled) = order::on_deadline(status) {
                    s.orders[o as usize] = Some(cancelled);
                    stage(s, Service::Order, Msg::Cancelled(o))?;
                }
                continue;
            }
            other => return Err(format!("the order service does not consume {other:?}")),
        };
        if let Some(settled) = order::on_answer(status, answer) {
            s.orders[o as usize] = Some(settled);
            let event = match settled {
                OrderStatus::Confirmed => Msg::Confirmed(o),
                _ => Msg::Rejected(o),
            };
            stage(s, Service::Order, event)?;
        }
    }
    Ok(())
}

/// Every distinct ordered selection of 1..=MAX_BATCH messages from a queue (a multiset).
fn batches(queue: &[Msg]) -> BTreeSet<Vec<usize>> {
    fn extend(
        queue: &[Msg],
        chosen: &mut Vec<usize>,
        out: &mut BTreeSet<Vec<usize>>,
        seen: &mut BTreeSet<Vec<Msg>>,
    ) {
        if !chosen.is_empty() {
            let msgs: Vec<Msg> = chosen.iter().map(|&i| queue[i]).collect();
            if seen.insert(msgs) {
                out.insert(chosen.clone());
            }
        }
        if chosen.len() == MAX_BATCH {
            return;
        }
        for i in 0..queue.len() {
            if !chosen.contains(&i) {
                chosen.push(i);
                extend(queue, chosen, out, seen);
                chosen.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    extend(queue, &mut Vec::new(), &mut out, &mut BTreeSet::new());
    out
}

fn node(s: &mut State, service: Service) -> &mut Node {
    match service {
        Service::Order => &mut s.order,
        Service::Inventory => &mut s.inventory,
    }
}

/// Every action possible in `s`, with the state it leads to (or the invariant it breaks).
fn successors(s: &State) -> Vec<(Action, Result<State, String>)> {
    let mut next = Vec::new();
    for o in 0..N as u8 {
        match s.orders[o as usize] {
            None => {
                let mut t = s.clone();
                t.orders[o as usize] = Some(OrderStatus::Pending);
                // The order, its order.created and its deadline in one transaction.
                let staged = stage(&mut t, Service::Order, Msg::Created(o))
                    .and_then(|()| {
                        if o < DEADLINES {
                            stage(&mut t, Service::Order, Msg::Deadline(o))
                        } else {
                            Ok(())
                        }
                    })
                    .map(|()| t);
                next.push((Action::Place(o), staged));
            }
            Some(status) => {
                if let Ok(cancelled) = order::cancel(status) {
                    let mut t = s.clone();
                    t.orders[o as usize] = Some(cancelled);
                    let staged = stage(&mut t, Service::Order, Msg::Cancelled(o)).map(|()| t);
                    next.push((Action::Cancel(o), staged));
                }
            }
        }
    }
    for service in [Service::Order, Service::Inventory] {
        let to = match service {
            Service::Order => &s.order,
            Service::Inventory => &s.inventory,
        };
        for (&msg, &delivered) in &to.deliveries {
            if delivered < MAX_DELIVERIES && s.duplicates > 0 {
                let mut t = s.clone();
                t.duplicates -= 1;
                let to = node(&mut t, service);
                *to.deliveries.get_mut(&msg).expect("delivered") += 1;
                to.queue.push(msg);
                to.queue.sort_unstable();
                next.push((Action::Duplicate(service, msg), Ok(t)));
            }
        }
    }
    for service in [Service::Order, Service::Inventory] {
        let queue = match service {
            Service::Order => &s.order.queue,
            Service::Inventory => &s.inventory.queue,
        };
        for picked in batches(queue) {
            let msgs: Vec<Msg> = picked.iter().map(|&i| queue[i]).collect();
            let mut batch = [None; MAX_BATCH];
            for (slot, m) in batch.iter_mut().zip(&msgs) {
                *slot = Some(*m);
            }
            let mut committed = s.clone();
            let applied = match service {
                Service::Order => order_batch(&mut committed, &msgs),
                Service::Inventory => inventory_batch(&mut committed, &msgs),
            };
            // A crash between the commit and the ack redelivers the batch: each of its messages
            // is delivered once more, within the budget of deliveries.
            let redeliverable = usize::from(s.duplicates) >= msgs.len()
                && msgs.iter().all(|m| {
                    let n = match service {
                        Service::Order => &s.order,
                        Service::Inventory => &s.inventory,
                    };
                    n.deliveries.get(m).copied().unwrap_or(0) < MAX_DELIVERIES
                });
            for acked in [true, false] {
                if !acked && !redeliverable {
                    continue;
                }
                let action = Action::Consume {
                    service,
                    batch,
                    acked,
                };
                let result = applied.clone().map(|()| {
                    let mut t = committed.clone();
                    let to = node(&mut t, service);
                    if acked {
                        let mut rest = Vec::with_capacity(to.queue.len());
                        for (i, m) in to.queue.iter().enumerate() {
                            if !picked.contains(&i) {
                                rest.push(*m);
                            }
                        }
                        to.queue = rest;
                    } else {
                        for m in &msgs {
                            *to.deliveries.entry(*m).or_default() += 1;
                        }
                        t.duplicates -= msgs.len() as u8;
                    }
                    t
                });
                next.push((action, result));
            }
        }
    }
    next
}

/// The invariants that hold in every state.
fn check(s: &State) -> Result<(), String> {
    for (product, put_in) in STOCK {
        let stock = s.stock.get(product).copied().unwrap_or_default();
        if stock.available < 0 || stock.reserved < 0 {
            return Err(format!("stock of {product} is negative: {stock:?}"));
        }
        if stock.available + stock.reserved != put_in {
            return Err(format!(
                "units of {product} created or lost: {stock:?}, {put_in} put in"
            ));
        }
        let held: i64 = s
            .reservations
            .values()
            .filter(|r| r.status == ReservationStatus::Reserved)
            .flat_map(|r| r.items.iter())
            .filter(|(p, _)| p == product)
            .map(|(_, q)| q)
            .sum();
        if held != stock.reserved {
            return Err(format!(
                "{product}: reserved is {} but RESERVED records hold {held}",
                stock.reserved
            ));
        }
    }
    for o in 0..N as u8 {
        let record = s.reservations.get(&order_uuid(o));
        if s.orders[o as usize] == Some(OrderStatus::Confirmed) {
            let holds: Vec<(String, i64)> =
                wanted(o).lines().map(|(p, q)| (p.to_owned(), q)).collect();
            let exact =
                record.is_some_and(|r| r.status == ReservationStatus::Reserved && r.items == holds);
            if !exact {
                return Err(format!(
                    "O{o} is CONFIRMED but the inventory holds {record:?} for it"
                ));
            }
        }
        let answers = [Msg::Reserved(o), Msg::Failed(o)]
            .iter()
            .filter(|m| s.inventory.staged.contains(m))
            .count();
        if answers > 1 {
            return Err(format!("the inventory answered O{o} twice"));
        }
    }
    Ok(())
}

/// Once every message is delivered (staged messages are queued at once: empty queues).
fn quiescent(s: &State) -> bool {
    s.order.queue.is_empty() && s.inventory.queue.is_empty()
}

fn check_settled(s: &State) -> Result<(), String> {
    for o in 0..N as u8 {
        let Some(status) = s.orders[o as usize] else {
            continue;
        };
        let record = s.reservations.get(&order_uuid(o)).map(|r| r.status);
        let agree = match status {
            OrderStatus::Pending => false,
            OrderStatus::Confirmed => record == Some(ReservationStatus::Reserved),
            OrderStatus::Rejected => record == Some(ReservationStatus::Failed),
            OrderStatus::Cancelled => matches!(
                record,
                Some(
                    ReservationStatus::Released
                        | ReservationStatus::Cancelled
                        | ReservationStatus::Failed
                )
            ),
        };
        if !agree {
            return Err(format!(
                "every message delivered, yet O{o} is {status:?} in the order service and \
                 {record:?} in the inventory"
            ));
        }
    }
    Ok(())
}

fn fingerprint<T: Hash>(value: &T) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    value.hash(&mut a);
    let mut b = std::hash::DefaultHasher::new();
    0x5eed_u32.hash(&mut b);
    value.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What a search found.
#[derive(Debug)]
struct Explored {
    states: usize,
    transitions: usize,
    settled_states: usize,
    depth: usize,
}

/// Breadth-first search from `start`; on a broken invariant, the shortest path to it. Only a
/// 128-bit fingerprint of each state is kept, with its parent's; a path is rebuilt by
/// replaying the successors along the fingerprints.
fn explore<S, A>(
    start: S,
    successors: impl Fn(&S) -> Vec<(A, Result<S, String>)>,
    check: impl Fn(&S) -> Result<(), String>,
    settled: impl Fn(&S) -> Option<Result<(), String>>,
) -> Result<Explored, (String, Vec<String>)>
where
    S: Clone + Hash,
    A: std::fmt::Display,
{
    let root = fingerprint(&start);
    let mut parents: HashMap<u128, u128> = HashMap::new();
    parents.insert(root, root);
    // The actions from `start` to the state `at`, and then `last`.
    let path_to = |parents: &HashMap<u128, u128>, at: u128, last: Option<String>| {
        let mut chain = vec![at];
        let mut here = at;
        while here != root {
            here = parents[&here];
            chain.push(here);
        }
        chain.reverse();
        let mut state = start.clone();
        let mut path = Vec::new();
        for want in &chain[1..] {
            let (action, next) = successors(&state)
                .into_iter()
                .find_map(|(a, n)| n.ok().filter(|n| fingerprint(n) == *want).map(|n| (a, n)))
                .expect("a recorded transition replays");
            path.push(action.to_string());
            state = next;
        }
        path.extend(last);
        path
    };
    let mut frontier = VecDeque::from([(start.clone(), 0usize)]);
    let mut explored = Explored {
        states: 1,
        transitions: 0,
        settled_states: 0,
        depth: 0,
    };
    while let Some((state, depth)) = frontier.pop_front() {
        let here = fingerprint(&state);
        explored.depth = explored.depth.max(depth);
        for (action, next) in successors(&state) {
            explored.transitions += 1;
            let next = match next {
                Ok(next) => next,
                Err(why) => return Err((why, path_to(&parents, here, Some(action.to_string())))),
            };
            let key = fingerprint(&next);
            if parents.contains_key(&key) {
                continue;
            }
            parents.insert(key, here);
            check(&next).map_err(|why| (why, path_to(&parents, key, None)))?;
            if let Some(result) = settled(&next) {
                explored.settled_states += 1;
                result.map_err(|why| (why, path_to(&parents, key, None)))?;
            }
            explored.states += 1;
            if explored.states.is_multiple_of(1_000_000) {
                eprintln!(
                    "  … {} states, depth {depth}, {} waiting",
                    explored.states,
                    frontier.len()
                );
            }
            frontier.push_back((next, depth + 1));
        }
    }
    Ok(explored)
}

fn report(name: &str, started: Instant, result: Result<Explored, (String, Vec<String>)>) {
    match result {
        Ok(e) => println!(
            "model check {name}: OK: {} states, {} transitions, {} with every message delivered, \
             depth {}, {:.1} s",
            e.states,
            e.transitions,
            e.settled_states,
            e.depth,
            started.elapsed().as_secs_f64()
        ),
        Err((why, path)) => {
            let steps: Vec<String> = path
                .iter()
                .enumerate()
                .map(|(i, a)| format!("  {:>2}. {a}", i + 1))
                .collect();
            panic!(
                "model check {name}: invariant broken: {why}\ncounterexample ({} steps):\n{}",
                path.len(),
                steps.join("\n")
            );
        }
    }
}

#[test]
fn the_order_saga_keeps_its_invariants_in_every_reachable_state() {
    let started = Instant::now();
    let result = explore(initial(), successors, check, |s| {
        quiescent(s).then(|| check_settled(s))
    });
    report("saga", started, result);
}

/// The contact model: one user's events (a sign-up and updates, two with the same time)
/// delivered in any order, any of them twice, in batches of one to three.
mod contacts {
    use super::*;

    /// (email, name, time) of each event; the first is `user.created`.
    pub(super) const EVENTS: [(Option<&str>, Option<&str>, i64); 5] = [
        (Some("e1"), Some("n1"), 1),
        (Some("e2"), None, 2),
        (None, Some("n3"), 3),
        (Some("e4"), Some("n4"), 4),
        (None, Some("n4b"), 4),
    ];

    pub(super) fn change(i: u8) -> ContactChange {
        let (email, name, t) = EVENTS[i as usize];
        ContactChange::new(
            email.map(Into::into),
            name.map(Into::into),
            DateTime::from_timestamp(t, 0),
        )
    }

    /// A service keeping the contact: the contact, its inbox, its queue (a multiset), and how
    /// often each event was published to it. The order and the notification services keep
    /// contacts through the same `Contact::apply` and apart from each other: one is checked.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
    pub(super) struct State {
        pub(super) contact: Contact,
        inbox: BTreeSet<u8>,
        queue: Vec<u8>,
        published: [u8; EVENTS.len()],
    }

    pub(super) fn successors(s: &State) -> Vec<(String, Result<State, String>)> {
        let mut next = Vec::new();
        for e in 0..EVENTS.len() as u8 {
            if s.published[e as usize] < MAX_DELIVERIES {
                let mut t = s.clone();
                t.published[e as usize] += 1;
                t.queue.push(e);
                t.queue.sort_unstable();
                next.push((format!("event {e} published"), Ok(t)));
            }
        }
        let queue: Vec<Msg> = s.queue.iter().map(|&e| Msg::Created(e)).collect();
        for picked in batches(&queue) {
            let events: Vec<u8> = picked.iter().map(|&i| s.queue[i]).collect();
            let action = format!("batch of events {events:?} applied");
            let mut t = s.clone();
            let mut broken = None;
            for &e in &events {
                if !t.inbox.insert(e) {
                    continue;
                }
                let before = t.contact.clone();
                t.contact.apply(&change(e));
                // No field goes back in time.
                for (old, new) in [
                    (&before.email, &t.contact.email),
                    (&before.name, &t.contact.name),
                ] {
                    if let (Some(old), Some(new)) = (old, new)
                        && new.at < old.at
                    {
                        broken = Some(format!("event {e} put {new:?} over the newer {old:?}"));
                    }
                }
            }
            t.queue = s
                .queue
                .iter()
                .enumerate()
                .filter(|(i, _)| !picked.contains(i))
                .map(|(_, e)| *e)
                .collect();
            next.push((action, broken.map_or(Ok(t), Err)));
        }
        next
    }

    /// The newest value of each field over every event.
    pub(super) fn expected() -> Contact {
        let mut newest = Contact::default();
        for (e, _) in EVENTS.iter().enumerate() {
            newest.apply(&change(e as u8));
        }
        newest
    }

    pub(super) fn settled(s: &State) -> Option<Result<(), String>> {
        let delivered = s.queue.is_empty() && s.published.iter().all(|p| *p > 0);
        delivered.then(|| {
            let want = expected();
            if s.contact == want {
                Ok(())
            } else {
                Err(format!(
                    "every event delivered, yet the contact is {:?}, not {want:?}",
                    s.contact
                ))
            }
        })
    }
}

#[test]
fn contacts_end_at_the_newest_value_of_each_field_whatever_the_arrival_order() {
    let started = Instant::now();
    let want = contacts::expected();
    assert_eq!(
        want.email.as_ref().map(|f| f.value.as_str()),
        Some("e4"),
        "{want:?}"
    );
    assert_eq!(
        want.name.as_ref().map(|f| f.value.as_str()),
        Some("n4b"),
        "{want:?}"
    );
    let result = explore(
        contacts::State::default(),
        contacts::successors,
        |_| Ok(()),
        contacts::settled,
    );
    report("contacts", started, result);
}
