//! The id of an event shop publishes, typed: what the outbox row is keyed by and the
//! consumers de-duplicate on.

/// The `message_id` of an event shop publishes: a UUID v7 (time-ordered), unique per event,
/// the outbox row's key. (An incoming message's id stays the text it arrived with: other
/// producers need not send UUIDs, and the inbox stores what came.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
#[sqlx(transparent)]
pub struct MessageId(uuid::Uuid);

impl MessageId {
    /// A fresh message id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The UUID, as the outbox's `message_id` column holds it.
    pub fn as_uuid(self) -> uuid::Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for MessageId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl PartialEq<String> for MessageId {
    /// A received `message_id` property (text) against the id that was published.
    fn eq(&self, text: &String) -> bool {
        uuid::Uuid::parse_str(text).is_ok_and(|id| id == self.0)
    }
}

impl PartialEq<MessageId> for String {
    fn eq(&self, id: &MessageId) -> bool {
        id == self
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
