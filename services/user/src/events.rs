//! The events the user service publishes. They carry no password and no hash.

use chrono::{DateTime, Utc};
use shop_proto::user::v1::{UserCreated, UserUpdated};

use shop_shared::time::timestamp;

use crate::repository::UserRow;

/// `user.created` for a new user.
pub(crate) fn user_created(user: &UserRow) -> UserCreated {
    UserCreated {
        user_id: user.user_id.to_string(),
        email: user.email.clone(),
        name: user.name.clone(),
        create_time: Some(timestamp(user.created_at)),
    }
}

/// `user.updated` with only the fields that changed.
pub(crate) fn user_updated(
    user: &UserRow,
    email_changed: bool,
    name_changed: bool,
    at: DateTime<Utc>,
) -> UserUpdated {
    UserUpdated {
        user_id: user.user_id.to_string(),
        email: email_changed.then(|| user.email.clone()),
        name: name_changed.then(|| user.name.clone()),
        update_time: Some(timestamp(at)),
    }
}
