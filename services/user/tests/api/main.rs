//! The user service through its gRPC API, with its own database and broker prefix.

mod helpers;

mod create_user;
mod get_user;
mod update_user;

mod authorization;
mod bounds;
mod keys;
mod login;
