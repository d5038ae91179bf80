//! The tonic `NotificationService`.

use shop_proto::notification::v1::notification_service_server::NotificationService;
use shop_proto::notification::v1::{
    ListNotificationsRequest, ListNotificationsResponse, Notification,
};
use shop_shared::time::timestamp;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::NotificationError;
use crate::repository::{self, NotificationRow};

const TOKEN_PREFIX: &str = "n1_";

/// The gRPC face of the notification service.
#[derive(Debug, Clone)]
pub(crate) struct NotificationGrpc {
    pub(crate) pool: PgPool,
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let r = request.into_inner();
        let invalid = NotificationError::InvalidArgument;
        let user_id = Uuid::parse_str(r.user_id.trim())
            .map_err(|_| invalid(format!("user_id {:?} is not a UUID", r.user_id)))?;
        let limit: i64 = match r.page_size {
            0 => 50,
            n if n < 0 => {
                return Err(invalid(format!("page_size must not be negative, got {n}")).into());
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
            Some(id)
        };
        let mut conn = self.pool.acquire().await.map_err(NotificationError::from)?;
        // One more than asked tells whether another page follows.
        let mut rows = repository::list_notifications(&mut conn, user_id, before, limit + 1)
            .await
            .map_err(NotificationError::from)?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => format!("{TOKEN_PREFIX}{}", last.notification_id.simple()),
            _ => String::new(),
        };
        Ok(Response::new(ListNotificationsResponse {
            notifications: rows.into_iter().map(to_proto).collect(),
            next_page_token,
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
    }
}
