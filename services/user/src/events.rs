//! The events the user service publishes. They carry no password and no hash.
//!
//! A sign-up is one event in two shapes, staged together with one message id: `user.created`
//! (v1, kept for the consumers that have not moved) and `user.created.v2` (the name in parts).

use chrono::{DateTime, Utc};
use shop_proto::user::v1::{UserCreated, UserUpdated};
use shop_proto::user::v2;
use shop_shared::messaging::{EventContext, Shapes};

use shop_shared::time::timestamp;

use crate::domain::SignUpProfile;
use crate::repository::UserRow;

/// A sign-up in both its shapes: `user.created` and `user.created.v2`.
pub(crate) fn user_created(
    user: &UserRow,
    profile: &SignUpProfile,
    context: &EventContext,
) -> Shapes {
    let v1 = UserCreated {
        user_id: user.user_id.to_string(),
        email: user.email.as_str().to_owned(),
        name: user.name.as_str().to_owned(),
        create_time: Some(timestamp(user.created_at)),
        metadata: profile.metadata.to_map(),
    };
    let v2 = v2::UserCreated {
        user_id: user.user_id.to_string(),
        email: user.email.as_str().to_owned(),
        name: Some(v2::PersonName {
            display_name: user.name.as_str().to_owned(),
            given_name: profile.given_name.clone().unwrap_or_default(),
            family_name: profile.family_name.clone().unwrap_or_default(),
        }),
        metadata: profile.metadata.to_map(),
        create_time: Some(timestamp(user.created_at)),
    };
    Shapes::of(&v1, context).and(&v2)
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
        email: email_changed.then(|| user.email.as_str().to_owned()),
        name: name_changed.then(|| user.name.as_str().to_owned()),
        update_time: Some(timestamp(at)),
    }
}
