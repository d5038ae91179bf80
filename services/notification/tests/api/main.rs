//! The notification service through its gRPC API, fed by events the test publishes.

mod helpers;

mod email;
mod notifications;

mod authorization;
