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
//! A batch of deliveries shares one [`Notices`] (see [`BatchState`]): the contacts its order
//! events are about, read in one statement before the first handler, and the notifications its
//! handlers record, written in one statement before the commit. A contact a handler of the
//! batch changes is changed in it too, so an order event sees the contact as the messages
//! before it left it (docs/contract.md, "Batches are invisible").
//!
//! An order event for a user whose contact has not arrived yet is a transient failure: the
//! message is retried (with backoff) until the `user.created` is applied.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use shop_proto::Event;
use shop_proto::order::v1::{OrderCancelled, OrderConfirmed, OrderRejected};
use shop_proto::user::v1::UserUpdated;
use shop_proto::user::v2::UserCreated;
use shop_saga::contact::ContactChange;
use shop_shared::ids::{CustomerId, NotificationId, UserId};
use shop_shared::messaging::{
    BatchState, BatchView, Handle, HandlerContext, HandlerError, Subscriptions, event_id,
};
use shop_shared::time::from_timestamp;
use sqlx::PgConnection;

use crate::delivery::DeliveryStatus;
use crate::email::templates::{Kind, Line, Model, Templates, money};
use crate::record::{NewNotification, record};
use crate::repository::{self, Contact};

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
    Subscriptions::with_state::<Notices>()
        .on::<UserCreated, _>(handlers.clone())
        .moved_from(shop_proto::user::v1::UserCreated::ROUTING_KEY)
        .on::<UserUpdated, _>(handlers.clone())
        .on::<OrderConfirmed, _>(handlers.clone())
        .on::<OrderRejected, _>(handlers.clone())
        .on::<OrderCancelled, _>(handlers)
        .into()
}

/// What one batch's handlers work on: the contacts of the users its order events are about (as
/// the batch's contact changes leave them), and the notifications they record.
#[derive(Debug, Default)]
pub(crate) struct Notices {
    contacts: HashMap<UserId, Contact>,
    recorded: Vec<(NewNotification, DeliveryStatus)>,
}

/// The user an order event is about; an id that does not parse is left to the handler, which
/// dead-letters the message.
fn customer(customer_id: &str) -> Option<UserId> {
    event_id::<CustomerId>(customer_id).ok().map(UserId::from)
}

#[async_trait::async_trait]
impl BatchState for Notices {
    async fn load(conn: &mut PgConnection, batch: &BatchView<'_>) -> Result<Self, HandlerError> {
        let users: BTreeSet<UserId> = batch
            .events::<OrderConfirmed>()
            .map(|e| e.customer_id.as_str())
            .chain(
                batch
                    .events::<OrderRejected>()
                    .map(|e| e.customer_id.as_str()),
            )
            .chain(
                batch
                    .events::<OrderCancelled>()
                    .map(|e| e.customer_id.as_str()),
            )
            .filter_map(customer)
            .collect();
        let contacts = if users.is_empty() {
            HashMap::new()
        } else {
            let users: Vec<UserId> = users.into_iter().collect();
            repository::find_contacts(conn, &users).await?
        };
        Ok(Self {
            contacts,
            recorded: Vec::new(),
        })
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), HandlerError> {
        record(conn, &self.recorded).await?;
        Ok(())
    }
}

/// Applies a change to a user's contact: load (locked), decide ([`shop_saga::contact`]: the
/// newest value of each field wins, whatever the arrival order), store.
async fn change_contact(
    cx: &mut HandlerContext<'_, Notices>,
    user_id: UserId,
    change: &ContactChange,
) -> Result<(), HandlerError> {
    let mut contact = repository::lock_contact(cx.conn(), user_id).await?;
    if contact.apply(change) {
        repository::store_contact(cx.conn(), user_id, &contact).await?;
    } else {
        tracing::info!(%user_id, "contact change older than what is kept: ignored");
    }
    // The batch's later order events about this user see the contact as it is now.
    let current = Contact {
        email: contact.email.map(|f| f.value),
        name: contact.name.map(|f| f.value),
    };
    cx.state().contacts.insert(user_id, current);
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
    /// Renders `kind` for `model` and records it (with the batch) for `user_id` at
    /// `recipient`.
    fn notify<E: Event>(
        &self,
        cx: &mut HandlerContext<'_, Notices>,
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
        cx.state().recorded.push((notification, self.status));
        Ok(())
    }

    /// Notifies an order's customer: `model` gets their name from their contact.
    fn about_order<E: Event>(
        &self,
        cx: &mut HandlerContext<'_, Notices>,
        customer_id: &str,
        order_id: &str,
        kind: Kind,
        model: Model,
    ) -> Result<(), HandlerError> {
        let user_id = UserId::from(event_id::<CustomerId>(customer_id)?);
        let Some(contact) = cx.state().contacts.get(&user_id).cloned() else {
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
    }
}

#[async_trait::async_trait]
impl Handle<UserCreated, Notices> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserCreated,
        cx: &mut HandlerContext<'_, Notices>,
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
    }
}

#[async_trait::async_trait]
impl Handle<UserUpdated, Notices> for NotificationHandlers {
    async fn handle(
        &self,
        e: &UserUpdated,
        cx: &mut HandlerContext<'_, Notices>,
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
impl Handle<OrderConfirmed, Notices> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderConfirmed,
        cx: &mut HandlerContext<'_, Notices>,
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
    }
}

#[async_trait::async_trait]
impl Handle<OrderRejected, Notices> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderRejected,
        cx: &mut HandlerContext<'_, Notices>,
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
    }
}

#[async_trait::async_trait]
impl Handle<OrderCancelled, Notices> for NotificationHandlers {
    async fn handle(
        &self,
        e: &OrderCancelled,
        cx: &mut HandlerContext<'_, Notices>,
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
    }
}

#[cfg(test)]
mod tests {
    use shop_shared::messaging::{Consumer, Envelope, EventContext, Link, MessagingConfig, Names};
    use shop_shared::metrics::Outcome;
    use shop_shared::testing::{TestDatabase, amqp_url};
    use shop_shared::time::{now, timestamp};
    use sqlx::PgPool;

    use super::*;

    /// The service's consumer on a database of its own, never connected to a broker: the test
    /// hands it each batch itself.
    async fn consumer() -> (TestDatabase, PgPool, Consumer) {
        let (db, pool) = TestDatabase::migrated(Some(&crate::MIGRATOR)).await;
        let templates = Templates::new().expect("the templates load");
        let consumer = Consumer::new(
            pool.clone(),
            Link::new(amqp_url(), "notification-batch-test"),
            Names::new(format!("batch-{}.", uuid::Uuid::new_v4().simple())),
            "notification",
            subscriptions(templates, DeliveryStatus::Recorded),
            MessagingConfig::default(),
        );
        (db, pool, consumer)
    }

    fn envelope<E: Event>(event: &E) -> Envelope {
        Envelope::new(event, "test", &EventContext::new_flow())
    }

    #[tokio::test]
    async fn an_order_event_sees_the_contact_as_the_earlier_messages_of_its_batch_left_it() {
        // Arrange: a user whose contact is known.
        let (_db, pool, consumer) = consumer().await;
        let user_id = UserId::new().to_string();
        let created = UserCreated {
            user_id: user_id.clone(),
            email: "old@example.com".into(),
            ..UserCreated::default()
        };
        consumer
            .apply_for_test(&[envelope(&created)], None)
            .await
            .unwrap();

        // Act: one batch: the user's new address, then an order of theirs confirmed.
        let order_id = uuid::Uuid::now_v7().to_string();
        let updated = UserUpdated {
            user_id: user_id.clone(),
            email: Some("new@example.com".into()),
            update_time: Some(timestamp(now())),
            ..UserUpdated::default()
        };
        let confirmed = OrderConfirmed {
            order_id: order_id.clone(),
            customer_id: user_id.clone(),
            ..OrderConfirmed::default()
        };
        let outcomes = consumer
            .apply_for_test(&[envelope(&updated), envelope(&confirmed)], None)
            .await
            .unwrap();

        // Assert: both applied, and the confirmation went to the address the batch set.
        assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied]);
        let recipient: String =
            sqlx::query_scalar("SELECT recipient FROM notifications WHERE order_id = $1")
                .bind(&order_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(recipient, "new@example.com");
    }
}
