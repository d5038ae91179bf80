//! The events that make notifications, and the contacts they are sent to.
//!
//! - `user.created.v2` → contact, and a welcome notification greeting the user by their given
//!   name (the service moved from `user.created`, v1: start-up unbinds that key from its
//!   queue, so a queue an earlier version declared stops receiving v1);
//! - `user.updated` → contact (the newest value of each field wins, whatever the arrival
//!   order);
//! - `order.confirmed` / `order.rejected` / `order.cancelled` → one notification each, with
//!   the order's lines and total.
//!
//! Each notification's email is rendered here ([`crate::email::templates`]) and recorded
//! ([`crate::record`]) in the transaction that applies the event; the dispatcher sends it after
//! the commit.
//!
//! An order event for a user whose contact has not arrived yet is a transient failure: the
//! message is retried (with backoff) until the `user.created` is applied.

use std::sync::Arc;

use shop_proto::Event;
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderRejected};
use shop_proto::user::v1::UserUpdated;
use shop_proto::user::v2::UserCreated;
use shop_saga::contact::ContactChange;
use shop_shared::ids::{CustomerId, NotificationId, UserId};
use shop_shared::messaging::{Handle, HandlerContext, HandlerError, Subscriptions, event_id};
use shop_shared::time::from_timestamp;

use crate::delivery::DeliveryStatus;
use crate::email::templates::{Kind, Line, Model, Templates, money};
use crate::record::{NewNotification, record};
use crate::repository;

/// The channel every notification goes through for now.
const CHANNEL: &str = "email";

/// The handlers of every event the notification service consumes.
#[derive(Debug)]
pub(crate) struct NotificationHandlers {
    pub(crate) templates: Templates,
    /// PENDING when a mail server is configured, RECORDED when none is.
    pub(crate) status: DeliveryStatus,
}

/// What the notification service subscribes to; its notifications are recorded with `status`.
pub(crate) fn subscriptions(templates: Templates, status: DeliveryStatus) -> Subscriptions {
    let handlers = Arc::new(NotificationHandlers { templates, status });
    Subscriptions::new()
        .on::<UserCreated, _>(handlers.clone())
        .moved_from(shop_proto::user::v1::UserCreated::ROUTING_KEY)
        .on::<UserUpdated, _>(handlers.clone())
        .on::<OrderConfirmed, _>(handlers.clone())
        .on::<OrderRejected, _>(handlers.clone())
        .on::<OrderCancelled, _>(handlers)
}

/// Applies a change to a user's contact: load (locked), decide ([`shop_saga::contact`]: the
/// newest value of each field wins, whatever the arrival order), store.
async fn change_contact(
    cx: &mut HandlerContext<'_>,
    user_id: UserId,
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

/// The lines of an order event, as the emails show them.
fn lines(items: &[shop_proto::order::v1::LineItem]) -> Vec<Line> {
    items
        .iter()
        .map(|i| Line::new(&i.product_id, i.quantity, i.unit_price_cents))
        .collect()
}

impl NotificationHandlers {
    /// Renders `kind` for `model` and records it for `user_id` at `recipient`.
    #[allow(clippy::too_many_arguments)]
    async fn notify<E: Event>(
        &self,
        cx: &mut HandlerContext<'_>,
        user_id: UserId,
        recipient: String,
        kind: Kind,
        model: Model,
        order_id: &str,
    ) -> Result<(), HandlerError> {
        let email = self.templates.render(kind, &model).map_err(|e| {
            HandlerError::permanent(format!("the {kind:?} email cannot be rendered: {e}"))
        })?;
        let notification = NewNotification {
            notification_id: NotificationId::new(),
            user_id,
            channel: CHANNEL.into(),
            recipient,
            subject: model.subject,
            body: email.text,
            html_body: email.html,
            source_event_type: E::TYPE_NAME.into(),
            source_event_id: cx.meta().message_id.clone(),
            order_id: order_id.into(),
        };
        record(cx.conn(), &notification, self.status).await?;
        Ok(())
    }

    /// Notifies an order's customer: `model` gets their name from their contact.
    async fn about_order<E: Event>(
        &self,
        cx: &mut HandlerContext<'_>,
        customer_id: &str,
        order_id: &str,
        kind: Kind,
        model: Model,
    ) -> Result<(), HandlerError> {
        let user_id = UserId::from(event_id::<CustomerId>(customer_id)?);
        let Some(contact) = repository::find_contact(cx.conn(), user_id).await? else {
            return Err(HandlerError::transient(format!(
                "no contact for user {user_id} yet (user.created not applied)"
            )));
        };
        let recipient = contact.email.unwrap_or_default();
        let model = Model {
            name: contact.name.unwrap_or_default(),
            order_id: order_id.to_owned(),
            ..model
        };
        self.notify::<E>(cx, user_id, recipient, kind, model, order_id)
            .await
    }
}

#[async_trait::async_trait]
impl Handle<UserCreated> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserCreated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let user_id: UserId = event_id(&e.user_id)?;
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
        let model = Model {
            subject: "Welcome to shop".into(),
            name: greeting.clone(),
            ..Model::default()
        };
        self.notify::<UserCreated>(cx, user_id, e.email.clone(), Kind::Welcome, model, "")
            .await
    }
}

#[async_trait::async_trait]
impl Handle<UserUpdated> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserUpdated,
        cx: &mut HandlerContext<'_>,
    ) -> Result<(), HandlerError> {
        let user_id: UserId = event_id(&e.user_id)?;
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
        let model = Model {
            subject: "Your order is confirmed".into(),
            lines: lines(&e.items),
            total: money(e.total_cents),
            ..Model::default()
        };
        self.about_order::<OrderConfirmed>(
            cx,
            &e.customer_id,
            &e.order_id,
            Kind::OrderConfirmed,
            model,
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
        let model = Model {
            subject: "Your order could not be fulfilled".into(),
            lines: lines(&e.items),
            total: money(e.total_cents),
            reason: e.reason.clone(),
            ..Model::default()
        };
        self.about_order::<OrderRejected>(
            cx,
            &e.customer_id,
            &e.order_id,
            Kind::OrderRejected,
            model,
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
        let model = Model {
            subject: "Your order is cancelled".into(),
            lines: lines(&e.items),
            total: money(e.total_cents),
            reason: e.reason.clone(),
            ..Model::default()
        };
        self.about_order::<OrderCancelled>(
            cx,
            &e.customer_id,
            &e.order_id,
            Kind::OrderCancelled,
            model,
        )
        .await
    }
}
