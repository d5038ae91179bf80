//! One dead letter as `shop dlq` shows it, and the groups `shop dlq list` sorts them into.
//!
//! A dead letter reaches `<queue>.dlq` one of two ways, and both are read here: shop's own
//! consumers publish a copy with `x-death-reason`, `x-death-time`, `x-retry-count` and
//! `x-original-routing-key`; the broker dead-letters a message itself (a polyglot consumer
//! rejected it, a delivery limit was reached) and writes its `x-death` table.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde_json::{Value, json};
use shop_shared::messaging::envelope;

use crate::cmd::inspect::decoded::{self, Decoder, MessageView};

/// A message in a dead-letter queue, read and decoded.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Ids, type, routing key and headers.
    pub view: MessageView,
    /// Why it died, as recorded.
    pub reason: String,
    /// Failed attempts before it died (`x-retry-count`, 0 when absent).
    pub retry_count: u32,
    /// When it died, if recorded.
    pub died_at: Option<DateTime<Utc>>,
    /// How often `shop dlq replay` sent it back already (`x-replayed-count`).
    pub replayed_count: u32,
    /// The decoded body.
    pub body: decoded::DecodedBody,
    /// The raw body, hex, kept for bodies that do not decode.
    pub body_hex: String,
}

impl DeadLetter {
    /// Reads a delivery from a DLQ.
    pub fn read(
        decoder: &Decoder,
        properties: &BasicProperties,
        routing_key: &str,
        body: &[u8],
    ) -> Self {
        let view = MessageView::read(properties, routing_key);
        let headers = properties.headers().clone().unwrap_or_default();
        let death = decoded::broker_death(&headers);
        let reason = envelope::header_str(&headers, envelope::DEATH_REASON)
            .or_else(|| {
                death.as_ref().and_then(|d| {
                    let reason = d.reason.clone()?;
                    Some(match &d.queue {
                        Some(queue) => format!("{reason} (by the broker, in {queue})"),
                        None => format!("{reason} (by the broker)"),
                    })
                })
            })
            .unwrap_or_else(|| "(no reason recorded)".to_owned());
        let died_at = envelope::header_str(&headers, envelope::DEATH_TIME)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| death.and_then(|d| d.time));
        Self {
            body: decoder.body(view.message_type.as_deref(), body),
            view,
            reason,
            retry_count: envelope::header_u32(&headers, envelope::RETRY_COUNT).unwrap_or(0),
            died_at,
            replayed_count: envelope::header_u32(&headers, envelope::REPLAYED_COUNT).unwrap_or(0),
            body_hex: decoded::hex(body),
        }
    }

    /// The `message_id`, or a placeholder for a message without one.
    pub fn id(&self) -> &str {
        self.view.message_id.as_deref().unwrap_or("(no message_id)")
    }

    /// The `type`, or a placeholder.
    pub fn type_name(&self) -> &str {
        self.view.message_type.as_deref().unwrap_or("(no type)")
    }

    /// What `shop dlq show --json` prints for it.
    pub fn json(&self) -> Value {
        let mut out = self.view.json();
        out.insert("reason".into(), json!(self.reason));
        out.insert("retry_count".into(), json!(self.retry_count));
        out.insert("replayed_count".into(), json!(self.replayed_count));
        out.insert("died_at".into(), json!(self.died_at.map(decoded::rfc3339)));
        out.insert("body".into(), self.body.json.clone());
        if let Some(error) = &self.body.error {
            out.insert("body_error".into(), json!(error));
            out.insert("body_hex".into(), json!(self.body_hex));
        }
        Value::Object(out)
    }

    /// The key it is grouped by: its type and its reason with ids and numbers masked.
    pub fn group_key(&self) -> (String, String) {
        (self.type_name().to_owned(), mask(&self.reason))
    }
}

/// Dead letters that share a type and a masked reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its number, from 1, in the order of its first message in the queue (what
    /// `shop dlq replay --group N` takes).
    pub number: usize,
    /// The messages' `type`.
    pub message_type: String,
    /// The reason with ids and numbers masked.
    pub reason: String,
    /// How many messages.
    pub count: usize,
    /// The earliest recorded death.
    pub oldest: Option<DateTime<Utc>>,
    /// The latest recorded death.
    pub newest: Option<DateTime<Utc>>,
    /// The message ids, in queue order.
    pub message_ids: Vec<String>,
}

impl Group {
    /// What `shop dlq list --json` prints for it.
    pub fn json(&self) -> Value {
        json!({
            "group": self.number,
            "type": self.message_type,
            "reason": self.reason,
            "count": self.count,
            "oldest": self.oldest.map(decoded::rfc3339),
            "newest": self.newest.map(decoded::rfc3339),
            "message_ids": self.message_ids,
        })
    }
}

/// Dead letters sorted into groups as they come, in queue order, numbered by first
/// appearance: a group's number is known as soon as its first message is seen, so a command
/// can act on group N while it reads the queue.
#[derive(Debug, Default)]
pub struct Groups {
    groups: Vec<Group>,
}

impl Groups {
    /// Counts `letter` in its group; returns the group's number.
    pub fn add(&mut self, letter: &DeadLetter) -> usize {
        let (message_type, reason) = letter.group_key();
        let index = match self
            .groups
            .iter()
            .position(|g| g.message_type == message_type && g.reason == reason)
        {
            Some(index) => index,
            None => {
                self.groups.push(Group {
                    number: self.groups.len() + 1,
                    message_type,
                    reason,
                    count: 0,
                    oldest: None,
                    newest: None,
                    message_ids: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        group.count += 1;
        group.message_ids.push(letter.id().to_owned());
        if let Some(at) = letter.died_at {
            group.oldest = Some(group.oldest.map_or(at, |o| o.min(at)));
            group.newest = Some(group.newest.map_or(at, |n| n.max(at)));
        }
        group.number
    }

    /// How many groups so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no message was seen.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The groups, by number.
    pub fn into_vec(self) -> Vec<Group> {
        self.groups
    }
}

/// `reason` with what differs from message to message masked, so that messages that failed
/// the same way group together: UUIDs and long hex strings become `<id>`, every other run of
/// digits `<n>`.
pub fn mask(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if !token.is_empty() {
            out.push_str(&mask_token(token));
            token.clear();
        }
    };
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn mask_token(token: &str) -> String {
    let hex_digits = token.chars().filter(char::is_ascii_hexdigit).count();
    let is_id = token.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && hex_digits >= 16
        && token.chars().any(|c| c.is_ascii_digit());
    if is_id {
        return "<id>".to_owned();
    }
    let mut out = String::with_capacity(token.len());
    let mut in_number = false;
    for c in token.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push_str("<n>");
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_numbers_are_masked() {
        assert_eq!(
            mask(
                "handler failed: order 0192f7a2-3c4d-7e8f-9a0b-1c2d3e4f5a6b has 3 lines (after 5 attempts)"
            ),
            "handler failed: order <id> has <n> lines (after <n> attempts)"
        );
        assert_eq!(
            mask("trace 4bf92f3577b34da6a3ce929d0e0e4736 at v2"),
            "trace <id> at v<n>"
        );
        assert_eq!(mask("no numbers here"), "no numbers here");
    }
}
