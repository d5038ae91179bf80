//! The notification service: keeps each user's contact from the user events and records a
//! notification for a new user (a welcome) and for every order that is confirmed, rejected
//! or cancelled, through a [`Sender`]. ListNotifications reads them back.
//!
//! # Layout
//! - [`config`] — settings.
//! - [`startup`] — [`Application`]: build and run.
//! - `grpc` — the tonic `NotificationService`: proto → domain → proto, nothing else.
//! - `notifications` — the ListNotifications use case (authorize, then read).
//! - [`sender`] — the [`Sender`] abstraction and its default, [`DatabaseSender`].
//! - `repository` — the SQL.
//! - `events` — the handlers that compose the notifications.
//! - [`error`] — [`NotificationError`] and its map to `tonic::Status`.

pub mod config;
pub mod error;
mod events;
mod grpc;
mod notifications;
mod repository;
pub mod sender;
pub mod startup;

/// The routing keys the service consumes (its queue's bindings), for the event catalog.
pub fn consumed_routing_keys() -> Vec<&'static str> {
    events::subscriptions(std::sync::Arc::new(DatabaseSender)).routing_keys()
}

pub use config::Config;
pub use error::NotificationError;
pub use sender::{DatabaseSender, NewNotification, Sender};
pub use startup::{Application, MIGRATOR};
