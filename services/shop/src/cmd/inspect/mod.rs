//! What the commands that read the broker share (`shop dlq`, `shop events tail`, `shop topology`):
//! one connection from `AMQP_URL` and `AMQP_PREFIX` ([`broker`]) and the decoded view of a
//! message ([`decoded`]).

pub mod broker;
pub mod decoded;
