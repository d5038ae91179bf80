//! The order service through its gRPC API and its events, with its own database and broker
//! prefix. The user and inventory services are played by the test, publishing their events.

mod helpers;

mod cancel_order;
mod create_order;
mod deadline;
mod list_orders;
mod saga;

mod authorization;
mod transient;
mod wrong_port;
