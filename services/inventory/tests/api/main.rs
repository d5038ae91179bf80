//! The inventory service through its gRPC API and its events, with its own database and
//! broker prefix. The order service is played by the test, publishing its events.

mod helpers;

mod adjust_stock;
mod reservations;

mod authorization;
