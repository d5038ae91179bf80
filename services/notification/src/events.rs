//! The events that make notifications, and the contacts they are sent to.
//!
//! - `user.created.v2` → contact, and a welcome notification greeting the user by their given
//!   name (the service moved from `user.created`, v1: start-up unbinds that key from its
//!   queue, so a queue an earlier version declared stops receiving v1);
//! - `user.updated` → contact (the newest value of each field wins, whatever the arrival
//!   order);
//! - `order.confirmed` / `order.rejected` / `order.cancelled` → one notification each.
//!
//! An order event for a user whose contact has not arrived yet is a transient failure: the
//! message is retried (with backoff) until the `user.created` is applied.

use std::sync::Arc;

use shop_proto::Event;
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderRejected};
use shop_proto::user::v1::UserUpdated;
use shop_proto::user::v2::UserCreated;
use shop_saga::contact::ContactChange;
use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions};
use shop_shared::time::from_timestamp;
use uuid::Uuid;

use crate::repository;
use crate::sender::{NewNotification, Sender};

/// The channel every notification goes through for now.
const CHANNEL: &str = "email";

/// The handlers of every event the notification service consumes.
#[derive(Debug)]
pub(crate) struct NotificationHandlers {
    pub(crate) sender: Arc<dyn Sender>,
}

/// What the notification service subscribes to.
pub(crate) fn subscriptions(sender: Arc<dyn Sender>) -> Subscriptions {
    let handlers = Arc::new(NotificationHandlers { sender });
    Subscriptions::new()
        .on::<UserCreated, _>(handlers.clone())
        .moved_from(shop_proto::user::v1::UserCreated::ROUTING_KEY)
        .on::<UserUpdated, _>(handlers.clone())
        .on::<OrderConfirmed, _>(handlers.clone())
        .on::<OrderRejected, _>(handlers.clone())
        .on::<OrderCancelled, _>(handlers)
}

fn user_id(raw: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(raw).map_err(|_| {
        HandlerError::permanent(format!(
            "user id {} is not a UUID",
            shop_shared::input::shown(raw)
        ))
    })
}

/// Applies a change to a user's contact: load (locked), decide ([`shop_saga::contact`]: the
/// newest value of each field wins, whatever the arrival order), store.
async fn change_contact(
    cx: &mut HandlerContext<'_>,
    user_id: Uuid,
    change: &ContactChange,
) -> Result<(), HandlerError> {
    let mut contact = repository::lock_contact(cx.conn(), user_id).await?;
    if contact.apply(change) {
        repository::store_contact(cx.conn(), user_id, &contact).await?;
    } else {
        tracing::info!(%user_id, "contact change older than what is kept: ignored");
    }
    Ok(())
}

/// Money for people: 1234 cents → "12.34".
fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

impl NotificationHandlers {
    /// Sends a notification about an order to its customer.
    async fn about_order<E: Event>(
        &self,
        cx: &mut HandlerContext<'_>,
        customer_id: &str,
        order_id: &str,
        subject: String,
        body: String,
    ) -> Result<(), HandlerError> {
        let user_id = user_id(customer_id)?;
        let Some(contact) = repository::find_contact(cx.conn(), user_id).await? else {
            return Err(HandlerError::transient(format!(
                "no contact for user {user_id} yet (user.created not applied)"
            )));
        };
        let recipient = contact.email.unwrap_or_default();
        let body = match contact.name {
            Some(name) if !name.is_empty() => format!("Hello {name}, {body}"),
            _ => body,
        };
        let notification = NewNotification {
            notification_id: Uuid::now_v7(),
            user_id,
            channel: CHANNEL.into(),
            recipient,
            subject,
            body,
            source_event_type: E::TYPE_NAME.into(),
            source_event_id: cx.meta().message_id.clone(),
            order_id: order_id.into(),
        };
        self.sender.send(cx.conn(), &notification).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<UserCreated> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let user_id = user_id(&e.user_id)?;
        let name = e.name.clone().unwrap_or_default();
        let change = ContactChange::new(
            Some(e.email.clone()),
            Some(name.display_name.clone()),
            e.create_time.as_ref().and_then(from_timestamp),
        );
        change_contact(cx, user_id, &change).await?;
        // Greet by the given name when the user gave one, else by the display name.
        let greeting = if name.given_name.is_empty() {
            &name.display_name
        } else {
            &name.given_name
        };
        let notification = NewNotification {
            notification_id: Uuid::now_v7(),
            user_id,
            channel: CHANNEL.into(),
            recipient: e.email.clone(),
            subject: "Welcome to shop".into(),
            body: format!("Hello {greeting}, your shop account is ready."),
            source_event_type: UserCreated::TYPE_NAME.into(),
            source_event_id: cx.meta().message_id.clone(),
            order_id: String::new(),
        };
        self.sender.send(cx.conn(), &notification).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<UserUpdated> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserUpdated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let user_id = user_id(&e.user_id)?;
        let change = ContactChange::new(
            e.email.clone(),
            e.name.clone(),
            e.update_time.as_ref().and_then(from_timestamp),
        );
        change_contact(cx, user_id, &change).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Handle<OrderConfirmed> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderConfirmed,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        self.about_order::<OrderConfirmed>(
            cx,
            &e.customer_id,
            &e.order_id,
            "Your order is confirmed".into(),
            format!(
                "your order {} is confirmed. Total: {}.",
                e.order_id,
                amount(e.total_cents)
            ),
        )
        .await
    }
}

#[async_trait::async_trait]
impl Handle<OrderRejected> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderRejected,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        self.about_order::<OrderRejected>(
            cx,
            &e.customer_id,
            &e.order_id,
            "Your order could not be fulfilled".into(),
            format!("your order {} was rejected: {}.", e.order_id, e.reason),
        )
        .await
    }
}

#[async_trait::async_trait]
impl Handle<OrderCancelled> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderCancelled,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        self.about_order::<OrderCancelled>(
            cx,
            &e.customer_id,
            &e.order_id,
            "Your order is cancelled".into(),
            format!("your order {} was cancelled: {}.", e.order_id, e.reason),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(amount(1234), "12.34");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(0), "0.00");
    }
}
