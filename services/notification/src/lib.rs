//! The notification service: keeps each user's contact from the user events and records a
//! notification for a new user (a welcome) and for every order that is confirmed, rejected
//! or cancelled; with a mail server configured (`SMTP_URL`) it emails each one after the
//! transaction that recorded it committed. ListNotifications reads them back.
//!
//! # Layout
//! - [`config`] — settings, the mail server's among them.
//! - [`startup`] — [`Application`]: build and run (the service, and the dispatcher).
//! - `grpc` — the tonic `NotificationService`: proto → domain → proto, nothing else.
//! - `notifications` — the ListNotifications use case (authorize, then read).
//! - `events` — the handlers that compose the notifications from the events.
//! - [`record`] — recording one in the handler's transaction (PENDING or RECORDED).
//! - [`email`] — the mailer (SMTP) and the templates the emails are rendered from.
//! - [`dispatch`] — sending the pending ones after the commit, retries, outcomes.
//! - [`delivery`] — where a notification's delivery stands.
//! - `repository` — the SQL.
//! - [`error`] — [`NotificationError`] and its map to `tonic::Status`.

pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod email;
pub mod error;
mod events;
mod grpc;
mod notifications;
pub mod record;
mod repository;
pub mod startup;

/// The routing keys the service consumes (its queue's bindings), for the event catalog.
pub fn consumed_routing_keys() -> Vec<&'static str> {
    match email::templates::Templates::new() {
        Ok(templates) => {
            events::subscriptions(templates, delivery::DeliveryStatus::Recorded).routing_keys()
        }
        Err(_) => Vec::new(),
    }
}

pub use config::Config;
pub use error::NotificationError;
pub use record::NewNotification;
pub use startup::{Application, MIGRATOR};
