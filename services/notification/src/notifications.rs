//! The notification service's use case: a user's notifications, newest first, for the user
//! themself or staff (docs/contract.md), with no gRPC in sight (`grpc.rs` only converts).

use shop_shared::auth::Caller;
use shop_shared::ids::{NotificationId, UserId};
use sqlx::PgPool;

use crate::NotificationError;
use crate::repository::{self, NotificationRow};

/// A valid ListNotifications request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListQuery {
    pub(crate) user_id: UserId,
    pub(crate) limit: i64,
    /// Notifications older than this one.
    pub(crate) before: Option<NotificationId>,
}

/// One page of notifications.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) notifications: Vec<NotificationRow>,
    /// The last notification of the page when another page follows.
    pub(crate) next_after: Option<NotificationId>,
}

/// What the use case works with.
#[derive(Debug, Clone)]
pub(crate) struct Notifications {
    pub(crate) pool: PgPool,
}

impl Notifications {
    /// ListNotifications: the user themself, or staff.
    pub(crate) async fn list(
        &self,
        caller: &Caller,
        query: ListQuery,
    ) -> Result<Page, NotificationError> {
        if !caller.may_act_for(query.user_id) {
            return Err(NotificationError::PermissionDenied);
        }
        let mut conn = self.pool.acquire().await?;
        // One more than asked tells whether another page follows.
        let mut rows =
            repository::list_notifications(&mut conn, query.user_id, query.before, query.limit + 1)
                .await?;
        let more = rows.len() as i64 > query.limit;
        rows.truncate(query.limit as usize);
        let next_after = rows
            .last()
            .filter(|_| more)
            .map(|last| last.notification_id);
        Ok(Page {
            notifications: rows,
            next_after,
        })
    }
}
