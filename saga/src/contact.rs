//! A user's contact data (email, name) as the order and notification services keep it from
//! `user.created` and `user.updated`.
//!
//! Events about one user may arrive in any order (two relays, a retried publish, a backlog),
//! so each field keeps the time of the event that set it, and a change only replaces a field
//! set by an older event: the newest value of each field wins, whatever the arrival order
//! (a last-writer-wins register per field). Two changes with the same time are ordered by
//! their value, so the result never depends on which came first.

use chrono::{DateTime, Utc};

/// A field's value and the time of the event that set it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamped {
    /// The value.
    pub value: String,
    /// When the user service made the change (`create_time` / `update_time`); `None`, older
    /// than any time, when the event carried none or the value was kept before times were.
    pub at: Option<DateTime<Utc>>,
}

/// What the service knows of a user's contact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The email address, if known.
    pub email: Option<Stamped>,
    /// The display name, if known.
    pub name: Option<Stamped>,
}

/// A change from one event: the fields it sets, and when the change was made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContactChange {
    /// The new email, when the event sets it.
    pub email: Option<String>,
    /// The new name, when the event sets it.
    pub name: Option<String>,
    /// The event's `create_time` or `update_time`; `None` (older than any time) when absent,
    /// so it never overrides a field set by a timed event.
    pub at: Option<DateTime<Utc>>,
}

impl ContactChange {
    /// A change made at `at` (`None`: the event carried no time).
    pub fn new(email: Option<String>, name: Option<String>, at: Option<DateTime<Utc>>) -> Self {
        Self { email, name, at }
    }
}

impl Contact {
    /// Applies `change` field by field; returns whether anything changed.
    pub fn apply(&mut self, change: &ContactChange) -> bool {
        let email = merge(&mut self.email, change.email.as_deref(), change.at);
        let name = merge(&mut self.name, change.name.as_deref(), change.at);
        email || name
    }
}

/// A stored field (value, time) as a [`Stamped`]; a value stored without a time (before times
/// were kept) is older than any event.
pub fn stamped(value: Option<String>, at: Option<DateTime<Utc>>) -> Option<Stamped> {
    value.map(|value| Stamped { value, at })
}

/// A [`Stamped`] field as stored: (value, time).
pub fn unstamped(field: Option<&Stamped>) -> (Option<&str>, Option<DateTime<Utc>>) {
    (field.map(|f| f.value.as_str()), field.and_then(|f| f.at))
}

/// Sets `field` to `value` unless what it holds is newer (or as new with a greater value).
fn merge(field: &mut Option<Stamped>, value: Option<&str>, at: Option<DateTime<Utc>>) -> bool {
    let Some(value) = value else { return false };
    let newer = match field {
        None => true,
        Some(current) => (at, value) > (current.at, current.value.as_str()),
    };
    if newer {
        *field = Some(Stamped {
            value: value.to_owned(),
            at,
        });
    }
    newer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn change(email: Option<&str>, name: Option<&str>, t: i64) -> ContactChange {
        ContactChange::new(email.map(Into::into), name.map(Into::into), Some(at(t)))
    }

    #[test]
    fn an_older_update_after_a_newer_one_changes_nothing() {
        let mut c = Contact::default();
        c.apply(&change(Some("new@x"), None, 20));
        assert!(
            c.apply(&change(Some("old@x"), Some("Old"), 10)),
            "the name had nothing newer"
        );
        assert_eq!(c.email.as_ref().unwrap().value, "new@x");
        // The older event's other field had nothing newer: it is kept.
        assert_eq!(c.name.as_ref().unwrap().value, "Old");
    }

    #[test]
    fn the_result_does_not_depend_on_the_arrival_order() {
        let changes = [
            change(Some("a@x"), Some("A"), 1),
            change(Some("b@x"), None, 2),
            change(None, Some("C"), 3),
            change(Some("d@x"), None, 2),
        ];
        let mut first = Contact::default();
        changes.iter().for_each(|c| {
            first.apply(c);
        });
        let mut reversed = Contact::default();
        changes.iter().rev().for_each(|c| {
            reversed.apply(c);
        });
        assert_eq!(first, reversed);
        assert_eq!(first.email.unwrap().value, "d@x");
        assert_eq!(first.name.unwrap().value, "C");
    }
}
