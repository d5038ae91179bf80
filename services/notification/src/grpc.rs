//! The tonic `NotificationService`: proto → domain, the use case in
//! [`crate::notifications`], domain → proto.

use shop_proto::notification::v1::notification_service_server::NotificationService;
use shop_proto::notification::v1::{
    ListNotificationsRequest, ListNotificationsResponse, Notification, NotificationDelivery,
};
use shop_shared::auth::caller;
use shop_shared::ids::UserId;
use shop_shared::time::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::NotificationError;
use crate::notifications::{ListQuery, Notifications};
use crate::repository::NotificationRow;

const TOKEN_PREFIX: &str = "n1_";

/// The gRPC face of the notification service.
#[derive(Debug, Clone)]
pub(crate) struct NotificationGrpc {
    pub(crate) notifications: Notifications,
}

impl TryFrom<ListNotificationsRequest> for ListQuery {
    type Error = NotificationError;

    fn try_from(r: ListNotificationsRequest) -> Result<Self, Self::Error> {
        let invalid = NotificationError::InvalidArgument;
        let user_id = UserId::parse(&r.user_id)?;
        let limit: i64 = match r.page_size {
            0 => 50,
            n if n < 0 => {
                return Err(invalid(format!("page_size must not be negative, got {n}")));
            }
            n => i64::from(n.min(500)),
        };
        let before = if r.page_token.is_empty() {
            None
        } else {
            let id = r
                .page_token
                .strip_prefix(TOKEN_PREFIX)
                .and_then(|hex| Uuid::try_parse(hex).ok())
                .ok_or_else(|| invalid("page_token is not valid".into()))?;
            Some(id.into())
        };
        Ok(Self {
            user_id,
            limit,
            before,
        })
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let caller = caller(&request)?;
        let query = ListQuery::try_from(request.into_inner())?;
        let page = self.notifications.list(&caller, query).await?;
        Ok(Response::new(ListNotificationsResponse {
            notifications: page.notifications.into_iter().map(to_proto).collect(),
            next_page_token: page
                .next_after
                .map(|id| format!("{TOKEN_PREFIX}{}", id.as_uuid().simple()))
                .unwrap_or_default(),
        }))
    }
}

fn to_proto(row: NotificationRow) -> Notification {
    Notification {
        notification_id: row.notification_id.to_string(),
        user_id: row.user_id.to_string(),
        channel: row.channel,
        recipient: row.recipient,
        subject: row.subject,
        body: row.body,
        source_event_type: row.source_event_type,
        source_event_id: row.source_event_id,
        order_id: row.order_id,
        create_time: Some(timestamp(row.created_at)),
        delivery_status: NotificationDelivery::from(row.delivery_status) as i32,
        delivery_error: row.delivery_error,
        sent_time: row.sent_at.map(timestamp),
    }
}

/// Fuzzing ListNotifications' validation (proptest): any input never panics.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn list_notifications(user_id in ".{0,64}", page_size in any::<i32>(), page_token in ".{0,64}") {
            let _ = ListQuery::try_from(ListNotificationsRequest { user_id, page_size, page_token });
        }
    }
}
