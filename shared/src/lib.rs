//! shop's shared infrastructure.
